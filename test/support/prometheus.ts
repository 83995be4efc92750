/** One sample of Prometheus's text exposition format: `name{label="value",...} number`. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Parse Prometheus's text format (version 0.0.4) into samples, checking what a scraper checks: every
 * sample's metric has a TYPE line before it, label values are quoted, values are numbers. Throws on
 * anything else, with the line.
 */
export function parseExposition(text: string): { samples: Sample[]; types: Map<string, string> } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('# HELP ')) continue;
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample: ${JSON.stringify(line)}`);
    const [, name, labelText, valueText] = m;
    const family = name!.replace(/_(bucket|sum|count)$/, '');
    if (!types.has(name!) && !types.has(family)) throw new Error(`sample before its TYPE: ${line}`);
    const labels: Record<string, string> = {};
    if (labelText) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/gy;
      let end = 0;
      for (let l = re.exec(labelText); l; l = re.exec(labelText)) {
        labels[l[1]!] = l[2]!.replace(/\\n/g, '\n').replace(/\\(.)/g, '$1');
        end = re.lastIndex;
      }
      if (end !== labelText.length) throw new Error(`bad labels: ${line}`);
    }
    const value = valueText === '+Inf' ? Infinity : valueText === '-Inf' ? -Infinity : Number(valueText);
    if (Number.isNaN(value) && valueText !== 'NaN') throw new Error(`bad value: ${line}`);
    samples.push({ name: name!, labels, value });
  }
  return { samples, types };
}

/** The samples named `name` whose labels include `labels`. */
export const find = (samples: readonly Sample[], name: string, labels: Record<string, string> = {}): Sample[] =>
  samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));

/** The one sample named `name` with `labels`; throws when there is not exactly one. */
export function one(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number {
  const f = find(samples, name, labels);
  if (f.length !== 1) throw new Error(`${f.length} samples of ${name} ${JSON.stringify(labels)}`);
  return f[0]!.value;
}
