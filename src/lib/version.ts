import { readFileSync } from 'node:fs';

/** This build's name and version from package.json, e.g. `relay-core 0.1.0`; read once. */
export const SOFTWARE: string = (() => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { name: string; version: string };
  return `${pkg.name} ${pkg.version}`;
})();
