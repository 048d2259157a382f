/**
 * Builds the ObjectStore a link configuration names: S3 (any S3-compatible endpoint, with the
 * standard AWS credential chain) or the embedded local-disk store used by the demo.
 */

import { LocalDiskStore } from '../engine/store/local';
import { S3Store } from '../engine/store/s3';
import { ObjectStore } from '../engine/store/types';
import { StoreSpec } from './config';

export function openStore(spec: StoreSpec): ObjectStore {
  switch (spec.kind) {
    case 's3':
      return new S3Store({
        bucket: spec.bucket,
        prefix: spec.prefix,
        region: spec.region,
        endpoint: spec.endpoint,
        pathStyle: spec.pathStyle,
      });
    case 'local':
      return new LocalDiskStore(spec.root);
  }
}
