#!/usr/bin/env node
// Builds the FUSE addon from the installed fuse-native sources with the corrections in
// fuse-native.patch beside this file (a unified diff against fuse-native 2.2.6's fuse-native.c;
// hunks named here by the function or macro they change):
//  1. Time setting, so tools that restore modification times (tar, cp -p, rsync -t, touch -m)
//     work. Its utimens handler passes the access time twice, losing the modification time:
//     the FUSE_METHOD_VOID(utimens) hunk passes l->mtime as the second time. It does not tell
//     libfuse that it understands UTIME_OMIT/UTIME_NOW, so libfuse2 drops every request that
//     sets only one of the two times (GNU tar sets only mtime): the fuse_native_mount hunk sets
//     ops.flag_utime_omit_ok, and the timespec_to_uint64 hunk passes the two as sentinel
//     values (see SPECIAL_TIMES in adapter.ts).
//  2. Direct I/O per file handle: the hunk in FUSE_METHOD(open)'s reply lets open(2) ask for it
//     with bit 30 of the returned handle, stripped before libfuse sees it. A read-only follower
//     uses it when a file it already has open changed in the bucket, so the kernel's shared page
//     cache cannot mix the two versions.
//  3. Keeping the kernel's page cache per file handle: the same hunk lets open(2) ask for
//     keep_cache with bit 29 of the returned handle (exported as `open_keep_cache`, so the
//     adapter knows the addon understands it). The filesystem asks for it when the pages the
//     kernel holds for the file can only be of the version the new handle reads.
//  4. Names cross as bytes: paths, names and link targets pass as latin1 strings (one char per
//     byte) instead of UTF-8, which replaced invalid byte sequences with U+FFFD (two different
//     names could become one). The first hunk adds a NAPI_LATIN1 macro; every other hunk turns
//     napi_create_string_utf8(env, l->...) into napi_create_string_latin1, and NAPI_UTF8 /
//     NAPI_ARGV_UTF8 into NAPI_LATIN1 in readdir's and readlink's replies. adapter.ts decodes
//     them (see wireToName).
//  5. Who made each request: libfuse2 knows the caller's uid, gid and pid (fuse_get_context() on
//     the FUSE thread) but fuse-native never passes them, so new files belonged to the user who
//     mounted. The FUSE_NATIVE_HANDLER hunk records them in the thread's locals (record_caller),
//     fuse_native_dispatch notes whose handler runs (`dispatching`), and the exported
//     `fuse_native_caller()` returns [uid, gid, pid] of that request while its handler runs on
//     the JS thread (undefined outside a handler); adapter.ts reads it at the start of create,
//     mkdir, symlink, chmod and chown (callerNow).
//  6. Requests on an open file that has no path any more: once an open file's folder is removed
//     (after the file itself), libfuse2 cannot build a path for it and refuses its reads and
//     writes with ENOENT unless the filesystem accepts a null path. The fuse_native_mount hunk
//     sets ops.flag_nullpath_ok, and every handler stores "" for a null path (`l->path = path !=
//     NULL ? path : ""`); adapter.ts answers such requests by file handle (fgetattr included).
//  7. Attributes answered on the FUSE thread: each lookup and getattr crossed to the JS thread
//     and back (a uv_async hop and a semaphore), so `ls -l` paid two such round trips per
//     entry (lookup, then getxattr of security.selinux) and a stat loop one per name. The
//     attribute-cache hunks keep, per mount, the attributes readdir (with stats) and getattr
//     answered, in a bounded eight-way set-associative table, and answer getattr, and getxattr
//     or listxattr of a path known to have no extended attributes (POSIX ACL names excepted),
//     without leaving the FUSE thread. It is off until `fuse_native_attr_cache(thread, ttlMs)`
//     turns it on. A request that may change something empties what it may change as it
//     arrives and as it is answered (FUSE_NATIVE_HANDLER and the signal functions): a write,
//     flush, chmod or the like its path's inode, a create or mkdir the folder's inode, any
//     other request (and one whose inode the cache does not know) everything. A create's answer
//     may carry the new file's and the folder's attributes, which are stored once it is
//     answered, so libfuse's fgetattr after a create (also answered from the cache now) and the
//     kernel's getattr of the folder before the next create do not cross. JS empties it for changes
//     made another way (`fuse_native_attr_forget(thread, ino, stat)`, one inode or all; with
//     the inode's attributes as they are now, its entries that hold exactly those stay, so an
//     upload that changes nothing stat shows costs no round trip), and an entry stored from an
//     answer is dead on arrival if the whole cache or that inode was emptied since that request
//     was dispatched.
//     `fuse_native_counts(thread)` tells, per operation, how many requests were answered on
//     the FUSE thread and how many crossed to JS, and how often the cache was emptied. The adapter enables it only for a filesystem that reports its
//     changes (FuseFilesystem.attributesChanged). It also holds the extended-attribute names
//     any entry has (`fuse_native_xattr_names`: all at once, then each new one), so a getxattr
//     of another name is answered at once: the kernel asks for security.capability before
//     every write.
//  8. Data buffers lent from a pool: each read and write request gave JS a new external buffer
//     over libfuse's memory, and V8 counts every such buffer as external memory: each 64 MB of
//     requests started a garbage collection (a 1 GiB stream cost dozens of full ones). The
//     pool_* functions keep up to 64 buffers of 128 KiB per mount, made once on the JS thread;
//     the FUSE thread copies a write's bytes into one before the request crosses, and a read's
//     answer out of it after JS signalled, then returns it (FUSE_NATIVE_HANDLER). A request
//     that finds none free, or is larger, gets libfuse's memory as before. JS may use a lent
//     buffer only until it answers, as it may libfuse's memory; adapter.ts hands reads a view
//     of the request's length. The free buffers are released at unmount.
//  9. No signals on the FUSE threads: the fuse_native_mount hunk starts the FUSE thread with
//     every signal blocked, so it and the workers fuse_loop_mt starts never run a signal
//     handler (start_fuse_thread unblocks them once the loop has returned). When a session
//     ends, fuse_loop_mt cancels its workers with pthread_cancel; a SIGCHLD (fusermount, or
//     any child, exiting) that libuv's handler took on a worker being cancelled deadlocked it
//     inside glibc's cancellation (uv__signal_lock's read under sigcancel_handler), the loop
//     thread waited in pthread_join for ever, and so did the unmount.
// 10. The kernel connection is not inherited: libfuse2 opens /dev/fuse without O_CLOEXEC (when
//     it mounts itself, as root does), so every child the mounting process started (Node's
//     child_process closes nothing) held the mount's connection open. Once the engine died, the
//     kernel kept the connection alive for that child, and every access to the mount, the
//     child's own included, waited for ever in uninterruptible sleep instead of failing with
//     ENOTCONN. The fuse_native_mount hunk sets FD_CLOEXEC on it right after fuse_mount.
// The patch is applied with `git apply`, not `patch`: git is already needed (CI installs it;
// `patch` is an optional Debian package), and git applies every hunk or none, never with fuzz.
// When the sources do not match (fuse-native changed) nothing is built.
// The corrected addon goes to native/fuse/addon/ (not in git) and native/fuse/adapter.ts
// prefers it; without it (no compiler, no git, other sources) the stock prebuild is used and
// only time setting, direct I/O, page-cache keeping, names that are not UTF-8, the owner of
// new files (the mounting user's), I/O on an open file whose folder was removed and the
// attribute cache differ. Same N-API binary for Node and Electron.
// It is built beside its final place and then swapped in, so a process loading the addon meanwhile
// finds the old one or the new one, never half of one; an addon folder that is a symbolic link
// (shared with another checkout) is replaced by its own build, never written through. If the
// build fails, the addon built before (if any) stays in use. A stamp
// in the folder names the sources and patch it was built from: with --if-stale (as `npm run
// build` runs it) nothing is done while the stamp matches, so a changed patch is built once.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const crypto = require('node:crypto');
const { nodeGyp: findNodeGyp, nodedirArgs, swapIn } = require('../build-common');

const src = path.dirname(require.resolve('fuse-native/package.json'));
const dest = path.join(__dirname, 'addon');
const out = path.join(__dirname, `addon.build-${process.pid}`);
const PATCH = path.join(__dirname, 'fuse-native.patch');
const STAMP = '.built-from';
const SOURCES = ['index.js', 'binding.gyp', 'package.json', 'semaphore.h', 'fuse-native.c'];

/** What an addon built now would be built from: the sources, the patch and this script. */
function stamp() {
  const h = crypto.createHash('sha256');
  for (const f of SOURCES) h.update(fs.readFileSync(path.join(src, f)));
  h.update(fs.readFileSync(PATCH));
  h.update(fs.readFileSync(__filename));
  return `${h.digest('hex')}\n`;
}

function upToDate(want) {
  try {
    return (
      fs.readFileSync(path.join(dest, STAMP), 'utf8') === want && fs.existsSync(path.join(dest, 'build', 'Release', 'fuse.node'))
    );
  } catch {
    return false;
  }
}

/** Applies PATCH to the sources copied into `out`; the reason it does not apply, or undefined. */
function applyPatch() {
  const pristine = fs.readFileSync(path.join(out, 'fuse-native.c'));
  // Not inside our repository: out/ is a directory of its own, so the patch's paths are
  // relative to it (git would otherwise resolve them against the repository's top).
  const env = { ...process.env, GIT_CEILING_DIRECTORIES: path.dirname(out) };
  delete env.GIT_DIR;
  delete env.GIT_WORK_TREE;
  try {
    execFileSync('git', ['apply', '--whitespace=nowarn', PATCH], { cwd: out, env, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    if (typeof err.status !== 'number') throw err; // git itself could not run
    return String(err.stderr).trim().split('\n')[0] || `git apply exited with ${err.status}`;
  }
  if (pristine.equals(fs.readFileSync(path.join(out, 'fuse-native.c')))) return 'the patch changed nothing';
  return undefined;
}

function main() {
  const want = stamp();
  if (process.argv.includes('--if-stale') && upToDate(want)) return;
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  for (const f of SOURCES) fs.copyFileSync(path.join(src, f), path.join(out, f));
  const refused = applyPatch();
  if (refused) {
    console.log(`fuse-native sources changed (${refused}); not building a corrected addon`);
    fs.rmSync(out, { recursive: true, force: true });
    fs.rmSync(dest, { recursive: true, force: true }); // one built from other sources must not be used
    return;
  }
  const nodeGyp = findNodeGyp();
  const args = [...nodeGyp.slice(1), 'rebuild', '--loglevel=error', ...nodedirArgs()];
  execFileSync(nodeGyp[0], args, { cwd: out, stdio: ['ignore', 'ignore', 'inherit'] });
  fs.writeFileSync(path.join(out, STAMP), want);
  swapIn(out, dest);
  console.log(`built the corrected FUSE addon in ${path.relative(process.cwd(), dest)}`);
}

try {
  main();
} catch (err) {
  fs.rmSync(out, { recursive: true, force: true });
  const kept = fs.existsSync(path.join(dest, 'build', 'Release', 'fuse.node'));
  console.warn(
    `warning: could not build the corrected FUSE addon (${err.message.split('\n')[0]}); ` +
      (kept
        ? 'the one built before stays in use'
        : 'the stock fuse-native build is used, which cannot set modification times on their own'),
  );
}
