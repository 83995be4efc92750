// The functions' IP address predicates, pure; the contract's request fields (src/contract/request.ts)
// check endpoints with them.

export function isIpv4(s: string): boolean {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  return !!m && m.slice(1).every((p) => Number(p) <= 255 && !(p.length > 1 && p.startsWith('0')));
}

export function isIpv6(s: string): boolean {
  if (s.length > 45 || !/^[0-9A-Fa-f:.]+$/.test(s)) return false;
  const lastColon = s.lastIndexOf(':');
  if (lastColon < 0) return false;
  let t = s;
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    // An embedded IPv4 tail (::ffff:192.0.2.1) counts as two groups.
    if (!isIpv4(tail)) return false;
    t = s.slice(0, lastColon + 1) + '0:0';
  }
  const groups = (x: string) => (x === '' ? [] : x.split(':'));
  const hex = (x: string[]) => x.every((g) => /^[0-9A-Fa-f]{1,4}$/.test(g));
  const halves = t.split('::');
  if (halves.length > 2) return false;
  if (halves.length === 2) {
    const a = groups(halves[0]!);
    const b = groups(halves[1]!);
    return hex(a) && hex(b) && a.length + b.length <= 7;
  }
  const all = t.split(':');
  return all.length === 8 && hex(all);
}
