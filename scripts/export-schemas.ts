/** Write docs/schemas/*.json from the event catalogue (`npm run schemas`). */
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { catalogueJsonSchemas } from '../src/contract/json-schema.ts';

const dir = join(import.meta.dirname, '..', 'docs', 'schemas');
mkdirSync(dir, { recursive: true });
for (const f of readdirSync(dir)) if (f.endsWith('.json')) rmSync(join(dir, f));
const schemas = catalogueJsonSchemas();
for (const [name, schema] of Object.entries(schemas)) writeFileSync(join(dir, name), JSON.stringify(schema, null, 2) + '\n');
console.log(`wrote ${Object.keys(schemas).length} schemas to ${dir}`);
