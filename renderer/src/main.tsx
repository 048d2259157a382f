// Renderer entry: picks the transport (preload IPC or loopback HTTP), connects the store, renders.

import { createRoot } from 'react-dom/client';
import { SettingsView } from './SettingsView';
import { StatusView } from './StatusView';
import { connect, show, startWizard, useApp, type Screen } from './store';
import { detectTransport } from './transport';
import { Wizard } from './Wizard';

function Nav() {
  const screen = useApp((s) => s.screen);
  const tab = (id: Screen, label: string) => (
    <button
      className={screen === id ? 'tab current' : 'tab'}
      data-testid={`nav-${id}`}
      onClick={() => (id === 'wizard' ? startWizard() : show(id))}
    >
      {label}
    </button>
  );
  return (
    <nav>
      {tab('status', 'Status')}
      {tab('settings', 'Settings')}
      {tab('wizard', 'Add filespace')}
    </nav>
  );
}

function App() {
  const screen = useApp((s) => s.screen);
  const ready = useApp((s) => s.status !== null);
  const trouble = useApp((s) => s.connectionTrouble);
  const notice = useApp((s) => s.notice);
  const noticeTone = useApp((s) => s.noticeTone);
  return (
    <>
      <header className="top">
        <h1>Filespace</h1>
        <Nav />
      </header>
      {trouble ? (
        <p className="error" role="alert">
          {trouble}
        </p>
      ) : null}
      <div role="status" aria-live="polite" className="notices">
        {notice ? (
          <p className={noticeTone === 'info' ? 'notice info' : 'notice'} data-testid="notice">
            {notice}
          </p>
        ) : null}
      </div>
      <main>
        {!ready ? (
          <p>Connecting to the app host…</p>
        ) : screen === 'wizard' ? (
          <Wizard />
        ) : screen === 'settings' ? (
          <SettingsView />
        ) : (
          <StatusView />
        )}
      </main>
    </>
  );
}

const root = createRoot(document.getElementById('root')!);
try {
  connect(detectTransport());
  root.render(<App />);
} catch (err) {
  root.render(
    <p className="error" role="alert">
      {(err as Error).message}
    </p>,
  );
}
