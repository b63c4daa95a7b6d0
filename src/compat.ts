/**
 * ftp6proxy-compat: the tools an administrator runs when moving from the C
 * daemon to this port, and the pure pieces the compat suite shares.
 *
 *   ftp6proxy-compat flags [-m module] "<ftp6proxy_flags>"
 *       Does ftp6proxy accept this rc.conf flags string with the meaning the
 *       original gave it?  Exit 0 if so; otherwise exit 1 and say why, option
 *       by option.
 *   ftp6proxy-compat rcconf [-m module] FILE
 *       The same for the ftp6proxy_* assignments of an rc.conf(5).
 *   ftp6proxy-compat observe [-m module] [-b base] [-c count] [-a anchor] [-t seconds] [-x seconds]
 *       Poll the live firewall and print what changed, as transcript lines
 *       `T open N SRC DST PORT` / `T close N` (the format of ftp6proxy-replay
 *       and of the shadow log), until SIGINT/SIGTERM or -x seconds.
 *   ftp6proxy-compat diff SHADOW OBSERVED
 *       The migration check: the holes (SRC DST PORT, ignoring T and N) of a
 *       shadow log (`shadow: would open N SRC DST PORT`) or transcript against
 *       those of an observe transcript.  Exit 0 when they are the same.
 *
 * The module defaults to ipfw (the C daemon's FreeBSD module) for flags and
 * rcconf, and to the platform's module for observe.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import { defaultsFor, getopt, parseOptions, UsageError } from './options';
import { MODULES, ModuleName } from './types';

// ---- unified diff --------------------------------------------------------------

/**
 * A unified diff (diff -u layout) of two line lists, from their longest
 * common subsequence.  Returns [] when they are equal.  O(n*m) time and
 * space, which is fine for transcripts of a few hundred lines.
 */
export function unifiedDiff(a: readonly string[], b: readonly string[], labelA: string, labelB: string, context = 3): string[] {
  const n = a.length;
  const m = b.length;
  // lcs[i*(m+1)+j] = length of the LCS of a[i..] and b[j..]
  const lcs = new Uint32Array((n + 1) * (m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * (m + 1) + j] = a[i] === b[j]
        ? lcs[(i + 1) * (m + 1) + j + 1] + 1
        : Math.max(lcs[(i + 1) * (m + 1) + j], lcs[i * (m + 1) + j + 1]);
    }
  }
  type Op = { k: ' ' | '-' | '+'; text: string; ai: number; bi: number };
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      ops.push({ k: ' ', text: a[i], ai: i++, bi: j++ });
    } else if (i < n && (j === m || lcs[(i + 1) * (m + 1) + j] >= lcs[i * (m + 1) + j + 1])) {
      // deletions first, as diff(1) prints them
      ops.push({ k: '-', text: a[i], ai: i++, bi: j });
    } else {
      ops.push({ k: '+', text: b[j], ai: i, bi: j++ });
    }
  }
  if (ops.every((o) => o.k === ' ')) return [];

  const out = [`--- ${labelA}`, `+++ ${labelB}`];
  let k = 0;
  while (k < ops.length) {
    // find the next change
    while (k < ops.length && ops[k].k === ' ') k++;
    if (k >= ops.length) break;
    const start = Math.max(0, k - context);
    // extend the hunk while changes are within 2*context of each other
    let end = k;
    for (;;) {
      while (end < ops.length && ops[end].k !== ' ') end++;
      let next = end;
      while (next < ops.length && ops[next].k === ' ') next++;
      if (next < ops.length && next - end <= 2 * context) {
        end = next;
        continue;
      }
      end = Math.min(ops.length, end + context);
      break;
    }
    const hunk = ops.slice(start, end);
    const aLen = hunk.filter((o) => o.k !== '+').length;
    const bLen = hunk.filter((o) => o.k !== '-').length;
    // diff(1): a range of length 0 starts at the line before it
    const aStart = aLen === 0 ? hunk[0].ai : hunk[0].ai + 1;
    const bStart = bLen === 0 ? hunk[0].bi : hunk[0].bi + 1;
    out.push(`@@ -${aStart},${aLen} +${bStart},${bLen} @@`);
    for (const o of hunk) out.push(o.k + o.text);
    k = end;
  }
  return out;
}

// ---- transcripts and expectations ------------------------------------------------

/** A hole as the migration check compares it: no rule number, no time. */
export type HoleKey = string; // "SRC DST PORT"

/**
 * The holes opened in a transcript, a shadow log or an observe output, in
 * order, as "SRC DST PORT".  Recognised lines:
 *   T open N SRC DST PORT                     (replay, observe)
 *   ... shadow: would open N SRC DST PORT     (ftp6proxy -n log)
 */
export function openedHoles(lines: readonly string[]): HoleKey[] {
  const out: HoleKey[] = [];
  const re = /(?:^[0-9.]+ open|shadow: would open) [0-9]+ (\S+) (\S+) ([0-9]+)\s*$/;
  for (const l of lines) {
    const m = re.exec(l);
    if (m !== null) out.push(`${m[1]} ${m[2]} ${m[3]}`);
  }
  return out;
}

/** `# N packets, H holes, R refused, E pool exhausted` (replay's last line) */
export function refusedCount(lines: readonly string[]): number | undefined {
  for (const l of lines) {
    const m = /^# [0-9]+ packets, [0-9]+ holes, ([0-9]+) refused, [0-9]+ pool exhausted$/.exec(l);
    if (m !== null) return Number(m[1]);
  }
  return undefined;
}

export interface Expectation {
  /** ftp6proxy options for the replay, from `# flags: ...` */
  flags: string[];
  /** from `# refused: N` (hostile traces) */
  refused?: number;
  /** the holes that must open, "SRC DST PORT" */
  opens: HoleKey[];
}

/**
 * Parse NAME.expect: `open SRC DST PORT` lines (a trailing `# comment` is
 * allowed), comment lines, and the directives `# flags: ...` and `# refused: N`.
 */
export function parseExpect(text: string): Expectation {
  const e: Expectation = { flags: [], opens: [] };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const flags = /^#\s*flags:\s*(.*)$/.exec(line);
    if (flags !== null) {
      e.flags = shellWords(flags[1]);
      continue;
    }
    const refused = /^#\s*refused:\s*([0-9]+)\s*$/.exec(line);
    if (refused !== null) {
      e.refused = Number(refused[1]);
      continue;
    }
    const body = line.replace(/\s*#.*$/, '');
    if (body === '') continue;
    const m = /^open\s+(\S+)\s+(\S+)\s+([0-9]+)$/.exec(body);
    if (m === null) throw new Error(`not an expectation line: "${raw}"`);
    e.opens.push(`${m[1]} ${m[2]} ${Number(m[3])}`);
  }
  return e;
}

/** Count of each item. */
function counts(xs: readonly string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
  return m;
}

/**
 * Compare two multisets of holes: what `want` has and `got` lacks, and what
 * `got` has beyond `want`.
 */
export function compareHoles(want: readonly HoleKey[], got: readonly HoleKey[]): { missing: HoleKey[]; extra: HoleKey[] } {
  const w = counts(want);
  const g = counts(got);
  const missing: HoleKey[] = [];
  const extra: HoleKey[] = [];
  for (const [k, n] of w) for (let i = g.get(k) ?? 0; i < n; i++) missing.push(k);
  for (const [k, n] of g) for (let i = w.get(k) ?? 0; i < n; i++) extra.push(k);
  return { missing, extra };
}

/**
 * Check a transcript against an expectation: every expected hole opens (as
 * often as listed), no other hole opens, and the refusal count matches when
 * the expectation states one.  Returns the problems, [] when it holds.
 */
export function checkExpectation(e: Expectation, transcript: readonly string[]): string[] {
  const problems: string[] = [];
  const { missing, extra } = compareHoles(e.opens, openedHoles(transcript));
  for (const h of missing) problems.push(`expected hole did not open: open ${h}`);
  for (const h of extra) problems.push(`hole opened that the .expect does not list: open ${h}`);
  if (e.refused !== undefined) {
    const r = refusedCount(transcript);
    if (r !== e.refused) problems.push(`expected ${e.refused} refused announcements, the transcript says ${r ?? 'nothing'}`);
  }
  return problems;
}

// ---- sh(1) words -----------------------------------------------------------------

export class ShellSyntaxError extends Error {}

/**
 * Split a string into words as sh(1) would for `$ftp6proxy_flags` after the
 * rc.conf assignment: blanks separate words, '...' and "..." quote, a
 * backslash escapes the next character (inside "..." only before $ ` " \ and
 * newline).  No expansion is done: a `$` is kept literally.
 */
export function shellWords(s: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === ' ' || c === '\t' || c === '\n') {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
      i++;
    } else if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) throw new ShellSyntaxError('unterminated single quote');
      cur += s.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (c === '"') {
      inWord = true;
      i++;
      for (;;) {
        if (i >= s.length) throw new ShellSyntaxError('unterminated double quote');
        const d = s[i];
        if (d === '"') { i++; break; }
        if (d === '\\' && i + 1 < s.length && '$`"\\\n'.includes(s[i + 1])) {
          if (s[i + 1] !== '\n') cur += s[i + 1];
          i += 2;
        } else {
          cur += d;
          i++;
        }
      }
    } else if (c === '\\') {
      if (i + 1 < s.length && s[i + 1] !== '\n') { cur += s[i + 1]; inWord = true; }
      i += 2;
    } else {
      cur += c;
      inWord = true;
      i++;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

// ---- flags -------------------------------------------------------------------------

/** The C daemon's options (legacy/usage-v0.3-ipfw.txt, usage-v0.4-netgraph.txt). */
const ORIGINAL_WITH_VALUE = 'bcfijpqrtu';
const ORIGINAL_FLAGS = 'dh';
/** Ours only. */
const NEW_WITH_VALUE = 'am';
const NEW_FLAGS = 'n';
const ORIGINAL_LIST = [...(ORIGINAL_WITH_VALUE + ORIGINAL_FLAGS)].sort().join(' ');

const MEANING: Record<string, string> = {
  b: 'first rule number of the hole pool',
  c: 'pool size',
  d: 'foreground (-d -d: also no chroot, debug log to stderr, privileges kept)',
  f: 'syslog facility',
  h: 'print the usage and exit',
  i: 'pidfile',
  j: 'ipfw rule to call instead of allow',
  p: 'divert port / ng_ipfw hook / NFQUEUE number',
  q: 'pf queue for data connections',
  r: 'chroot directory',
  t: 'seconds a hole stays open',
  u: 'user to run as',
  m: 'firewall module',
  a: 'pf anchor or nftables family/table',
  n: 'shadow mode: log the rule operations, touch no firewall',
};

export interface FlagReport {
  ok: boolean;
  /** one line per option, then a verdict line */
  lines: string[];
}

/**
 * Check an rc.conf ftp6proxy_flags string for `module` (the C daemon's
 * build: ipfw, netgraph or pf), option by option, then as a whole.
 */
export function checkFlags(flags: string, module: ModuleName = 'ipfw'): FlagReport {
  const lines: string[] = [];
  let problems = 0;
  const bad = (s: string) => { lines.push(s); problems++; };
  let words: string[];
  try {
    words = shellWords(flags);
  } catch (e) {
    return { ok: false, lines: [`flags: ${(e as Error).message}`, 'flags: NOT accepted'] };
  }

  // Walk the words as getopt(3) would, but go on past an unknown letter so
  // that every option gets its line.
  const opts: Array<[string, string | true]> = [];
  let operands: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    if (w === '--') { operands = words.slice(i + 1); break; }
    if (w.length < 2 || w[0] !== '-') { operands = words.slice(i); break; }
    for (let j = 1; j < w.length; j++) {
      const c = w[j];
      if ((ORIGINAL_WITH_VALUE + NEW_WITH_VALUE).includes(c)) {
        let v: string | undefined;
        if (j + 1 < w.length) v = w.slice(j + 1);
        else if (i + 1 < words.length) v = words[++i];
        if (v === undefined) bad(`-${c}: needs a value (${MEANING[c]})`);
        else opts.push([c, v]);
        break;
      } else if ((ORIGINAL_FLAGS + NEW_FLAGS).includes(c)) {
        opts.push([c, true]);
      } else {
        bad(`-${c}: not an option of ftp6proxy (original options: ${ORIGINAL_LIST})`);
      }
    }
  }

  // The module the flags themselves choose, if any (a port-only flag).
  let mod = module;
  for (const [c, v] of opts) if (c === 'm' && typeof v === 'string' && (MODULES as readonly string[]).includes(v)) mod = v as ModuleName;
  const defaults = defaultsFor(mod);

  const good: Array<[string, string | true]> = [];
  for (const [c, v] of opts) {
    const shown = v === true ? `-${c}` : `-${c} ${/^[^\s'"]+$/.test(v) ? v : `'${v}'`}`;
    // Alone, with neutral partners where the check involves another option
    // (the pool range, -j outside the pool): combinations are checked below.
    const partner: Record<string, string[]> = { b: ['-c', '1'], c: ['-b', '1'], j: ['-b', v === '1' ? '2' : '1', '-c', '1'] };
    const argv = ['-m', mod, ...(partner[c] ?? []), ...(v === true ? [`-${c}`] : [`-${c}`, v])];
    let err: string | null = null;
    try {
      if (c !== 'h') parseOptions(argv, mod);
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      err = e.message;
    }
    if (err !== null) {
      bad(`${shown} with module ${mod}: refused by ftp6proxy: ${err}`);
      continue;
    }
    good.push([c, v]);
    if ((NEW_WITH_VALUE + NEW_FLAGS).includes(c)) {
      lines.push(`${shown}: accepted (${MEANING[c]}); new in this port, not understood by the C daemon`);
    } else if (c === 'h') {
      bad(`${shown}: prints the usage and exits; the daemon would not run`);
    } else {
      let note = '';
      if (c === 'd') note = '; in rc.conf it keeps the daemon in the foreground, as the original did';
      if (c === 'b' && v === String(defaults.base)) note = ' (the default)';
      lines.push(`${shown}: accepted, same meaning (${MEANING[c]})${note}`);
    }
  }
  if (operands.length > 0) {
    bad(`"${operands.join(' ')}": not an option; ftp6proxy takes no operands`);
  }

  // Combinations (pool beyond 65534, -j inside the pool, -d three times).
  {
    try {
      const argv = good.flatMap(([c, v]) => (v === true ? [`-${c}`] : [`-${c}`, v]));
      parseOptions(argv.includes('-m') ? argv : ['-m', mod, ...argv], mod);
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      bad(`together: refused by ftp6proxy: ${e.message}`);
    }
  }
  lines.push(problems === 0
    ? `flags: accepted by ftp6proxy (module ${mod}) with the same meaning`
    : `flags: NOT accepted (module ${mod}): ${problems} problem${problems === 1 ? '' : 's'}`);
  return { ok: problems === 0, lines };
}

// ---- rc.conf ------------------------------------------------------------------------

export interface Assignment {
  line: number;
  name: string;
  value: string;
}

/**
 * The variable assignments of an rc.conf(5) file (a sh fragment): `name=value`
 * with '...' / "..." quoting, comments and blank lines.  Other lines
 * (commands, conditionals) are not assignments and are skipped.
 */
export function parseRcConf(text: string): { assignments: Assignment[]; errors: string[] } {
  const assignments: Assignment[] = [];
  const errors: string[] = [];
  const lines = text.split('\n');
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
    if (m === null) continue;
    // The value is one sh word (quotes joined), up to a blank or a comment.
    const rest = m[2];
    let end = 0;
    let quote: string | null = null;
    for (; end < rest.length; end++) {
      const c = rest[end];
      if (quote !== null) {
        if (c === quote) quote = null;
        else if (c === '\\' && quote === '"') end++;
      } else if (c === "'" || c === '"') quote = c;
      else if (c === '\\') end++;
      else if (c === ' ' || c === '\t' || c === ';') break;
    }
    if (quote !== null) {
      errors.push(`line ${n + 1}: ${m[1]}: unterminated ${quote === '"' ? 'double' : 'single'} quote`);
      continue;
    }
    let value: string;
    try {
      value = shellWords(rest.slice(0, end)).join(' ');
    } catch (e) {
      errors.push(`line ${n + 1}: ${m[1]}: ${(e as Error).message}`);
      continue;
    }
    assignments.push({ line: n + 1, name: m[1], value });
  }
  return { assignments, errors };
}

/** rc.subr(8) checkyesno: YES TRUE ON 1 / NO FALSE OFF 0, any case. */
export function yesNo(v: string): boolean | undefined {
  const s = v.toLowerCase();
  if (['yes', 'true', 'on', '1'].includes(s)) return true;
  if (['no', 'false', 'off', '0'].includes(s)) return false;
  return undefined;
}

/** Variables rc.subr(8) itself reads for any service `name` (name_VAR). */
const RC_SUBR_VARS = [
  'chdir', 'chroot', 'env', 'env_file', 'fib', 'group', 'groups', 'limits', 'login_class', 'nice',
  'oomprotect', 'prepend', 'program', 'umask', 'user', 'setup', 'svcj', 'svcj_options', 'offcmd',
];

export function checkRcConf(text: string, module: ModuleName = 'ipfw'): FlagReport {
  const lines: string[] = [];
  let problems = 0;
  const { assignments, errors } = parseRcConf(text);
  for (const e of errors) { lines.push(e); problems++; }
  const ours = assignments.filter((a) => a.name.startsWith('ftp6proxy_'));
  if (ours.length === 0) lines.push('no ftp6proxy_* variables: ftp6proxy_enable defaults to NO');
  const last = new Map<string, Assignment>();
  for (const a of ours) {
    const prev = last.get(a.name);
    if (prev !== undefined) lines.push(`line ${a.line}: ${a.name} again (line ${prev.line} is overridden: the last assignment counts)`);
    last.set(a.name, a);
  }
  for (const a of last.values()) {
    const where = `line ${a.line}: ${a.name}`;
    if (a.name === 'ftp6proxy_enable') {
      const yn = yesNo(a.value);
      if (yn === undefined) { lines.push(`${where}="${a.value}": not YES or NO; rc.subr warns and treats it as NO`); problems++; }
      else lines.push(`${where}="${a.value}": ok (${yn ? 'starts at boot' : 'disabled'})`);
    } else if (a.name === 'ftp6proxy_flags') {
      const r = checkFlags(a.value, module);
      for (const l of r.lines) lines.push(`${where}: ${l}`);
      if (!r.ok) problems++;
    } else if (RC_SUBR_VARS.includes(a.name.slice('ftp6proxy_'.length))) {
      lines.push(`${where}: read by rc.subr(8), not by ftp6proxy; check it still fits (ftp6proxy starts as root and drops to -u itself)`);
    } else {
      lines.push(`${where}: unknown variable (the original knows ftp6proxy_enable and ftp6proxy_flags)`);
      problems++;
    }
  }
  lines.push(problems === 0 ? 'rcconf: ok' : `rcconf: NOT ok: ${problems} problem${problems === 1 ? '' : 's'}`);
  return { ok: problems === 0, lines };
}

// ---- observe: reading the live firewall ----------------------------------------

/** A hole as seen in the firewall. */
export interface SeenHole {
  /** the ipfw rule number; null when the firewall has none (nft set elements, pf without anchor names) */
  rule: number | null;
  src: string;
  dst: string;
  port: number;
}

function isAddr(s: string): boolean {
  return /^[0-9.]+$/.test(s) || (/^[0-9a-fA-F:.]+$/.test(s) && s.includes(':'));
}

/**
 * `ipfw -S show base-last` (ipfw(8)): `NNNNN pkts bytes set S allow tcp from A to B P ...`.
 * The port is printed after the destination, either bare or as `dst-port P`
 * (ipfw versions differ); `call T` is the -j form.  Rules outside the pool
 * (the default rule 65535) are ignored.
 */
export function parseIpfwShow(text: string, base: number, count: number): SeenHole[] {
  const out: SeenHole[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim().split(/\s+/);
    if (t.length < 6 || !/^[0-9]+$/.test(t[0])) continue;
    const rule = Number(t[0]);
    if (rule < base || rule >= base + count) continue;
    const f = t.indexOf('from');
    const to = t.indexOf('to', f + 2);
    if (f < 0 || to < 0 || to + 1 >= t.length) continue;
    const src = t[f + 1];
    const dst = t[to + 1];
    let p = t[to + 2];
    if (p === 'dst-port') p = t[to + 3];
    if (!isAddr(src) || !isAddr(dst) || p === undefined || !/^[0-9]+$/.test(p)) continue;
    out.push({ rule, src, dst, port: Number(p) });
  }
  return out;
}

/**
 * `pfctl -a 'ftp6proxy/*' -sr` (pfctl(8)): the rules of every child anchor,
 * `pass in quick inet6 proto tcp from A to B port = P flags S/SA keep state (max 1)`,
 * one `in` and one `out` rule per hole.  When an `anchor "ftp6proxy/N"` line
 * names the anchor (pfctl versions differ: UNCONFIRMED), N is the rule number.
 */
export function parsePfRules(text: string): SeenHole[] {
  const out: SeenHole[] = [];
  const seen = new Set<string>();
  let anchor: number | null = null;
  for (const line of text.split('\n')) {
    const a = /anchor\s+"?(?:[A-Za-z0-9_-]+\/)*([0-9]+)"?/.exec(line);
    if (a !== null && !/\bpass\b/.test(line)) { anchor = Number(a[1]); continue; }
    const m = /\bpass\b.*\bproto tcp from (\S+) to (\S+) port = ([0-9]+)/.exec(line);
    if (m === null) continue;
    const key = `${anchor ?? ''} ${m[1]} ${m[2]} ${m[3]}`;
    if (seen.has(key)) continue; // the in/out pair is one hole
    seen.add(key);
    out.push({ rule: anchor, src: m[1], dst: m[2], port: Number(m[3]) });
  }
  return out;
}

/** `nft -j list set FAMILY TABLE NAME` (libnftables-json(5)): elements `{concat: [src, dst, port]}`. */
export function parseNftSetJson(text: string): SeenHole[] {
  const out: SeenHole[] = [];
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return out;
  }
  const items = (doc as { nftables?: unknown }).nftables;
  if (!Array.isArray(items)) return out;
  for (const it of items) {
    const set = (it as { set?: { elem?: unknown } }).set;
    if (set === undefined || !Array.isArray(set.elem)) continue;
    for (const e of set.elem) {
      // an element is either the value itself or {elem: {val, timeout, expires}}
      const inner = (e as { elem?: { val?: unknown } }).elem;
      const val = inner !== undefined ? inner.val : e;
      const concat = (val as { concat?: unknown }).concat;
      if (!Array.isArray(concat) || concat.length !== 3) continue;
      const [src, dst, port] = concat as unknown[];
      const p = typeof port === 'number' ? port : typeof port === 'string' && /^[0-9]+$/.test(port) ? Number(port) : NaN;
      if (typeof src !== 'string' || typeof dst !== 'string' || !Number.isInteger(p)) continue;
      out.push({ rule: null, src, dst, port: p });
    }
  }
  return out;
}

/**
 * Turns successive snapshots into transcript lines.  Holes with a rule number
 * keep it as N; set elements (nftables) have none, so each gets a running
 * index 1, 2, 3 ... on appearance, and `close N` names that index.
 */
export class SnapshotDiffer {
  private current = new Map<string, number>(); // identity -> N
  private nextIndex = 1;

  /** Lines for what changed since the last snapshot; `t` is seconds since the start. */
  step(t: number, holes: readonly SeenHole[]): string[] {
    const ts = t.toFixed(3);
    const out: string[] = [];
    const now = new Map<string, SeenHole>();
    for (const h of holes) now.set(`${h.rule ?? '-'} ${h.src} ${h.dst} ${h.port}`, h);
    for (const [id, n] of this.current) {
      if (!now.has(id)) {
        out.push(`${ts} close ${n}`);
        this.current.delete(id);
      }
    }
    const fresh = [...now.entries()].filter(([id]) => !this.current.has(id));
    fresh.sort((x, y) => (x[1].rule ?? 0) - (y[1].rule ?? 0));
    for (const [id, h] of fresh) {
      const n = h.rule ?? this.nextIndex++;
      this.current.set(id, n);
      out.push(`${ts} open ${n} ${h.src} ${h.dst} ${h.port}`);
    }
    return out;
  }
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}
export type Exec = (argv: string[]) => Promise<ExecResult>;

export const realExec: Exec = (argv) =>
  new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { timeout: 5000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127;
      resolve({ code, stdout: String(stdout), stderr: err !== null && stderr === '' ? err.message : String(stderr) });
    });
  });

export interface ObserveTarget {
  module: ModuleName;
  base: number;
  count: number;
  /** pf anchor or nftables family/table */
  anchor: string;
}

/** The commands that list the holes for a module. */
export function observeCommands(o: ObserveTarget): string[][] {
  switch (o.module) {
    case 'ipfw':
    case 'netgraph':
      return [['ipfw', '-S', 'show', `${o.base}-${o.base + o.count - 1}`]];
    case 'pf':
      return [['pfctl', '-a', `${o.anchor}/*`, '-sr']];
    case 'nftables': {
      const [family, table] = o.anchor.split('/');
      const sets = family === 'ip' ? ['ftp6proxy4'] : family === 'ip6' ? ['ftp6proxy6'] : ['ftp6proxy4', 'ftp6proxy6'];
      return sets.map((s) => ['nft', '-j', 'list', 'set', family, table, s]);
    }
  }
}

/** One snapshot of the holes; throws with the command's error when a listing fails. */
export async function snapshot(o: ObserveTarget, exec: Exec): Promise<SeenHole[]> {
  const out: SeenHole[] = [];
  for (const argv of observeCommands(o)) {
    const r = await exec(argv);
    if (r.code !== 0) throw new Error(`${argv.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
    switch (o.module) {
      case 'ipfw':
      case 'netgraph':
        out.push(...parseIpfwShow(r.stdout, o.base, o.count));
        break;
      case 'pf':
        out.push(...parsePfRules(r.stdout));
        break;
      case 'nftables':
        out.push(...parseNftSetJson(r.stdout));
        break;
    }
  }
  return out;
}

export interface ObserveOptions {
  target: ObserveTarget;
  intervalMs: number;
  /** stop after this many ms (undefined: until stop()) */
  durationMs?: number;
  exec?: Exec;
  write: (line: string) => void;
  warn: (line: string) => void;
  now?: () => number;
  /** resolves when the caller wants to stop (signals) */
  stopped?: Promise<void>;
}

/** Poll until the duration or `stopped`; resolves with the number of failed polls. */
export async function observe(o: ObserveOptions): Promise<number> {
  const exec = o.exec ?? realExec;
  const now = o.now ?? (() => Date.now());
  const t0 = now();
  const differ = new SnapshotDiffer();
  let stop = false;
  void o.stopped?.then(() => { stop = true; });
  let failures = 0;
  let lastError = '';
  o.write(`# observe ${o.target.module} ${o.target.module === 'ipfw' || o.target.module === 'netgraph'
    ? `rules ${o.target.base}-${o.target.base + o.target.count - 1}` : o.target.anchor}, every ${o.intervalMs} ms`);
  while (!stop) {
    const t = now();
    if (o.durationMs !== undefined && t - t0 >= o.durationMs) break;
    try {
      const holes = await snapshot(o.target, exec);
      for (const l of differ.step((t - t0) / 1000, holes)) o.write(l);
      lastError = '';
    } catch (e) {
      failures++;
      const msg = (e as Error).message;
      if (msg !== lastError) o.warn(`ftp6proxy-compat observe: ${msg}`);
      lastError = msg;
    }
    const wait = o.intervalMs - (now() - t);
    if (wait > 0) {
      await Promise.race([
        new Promise<void>((r) => setTimeout(r, wait)),
        o.stopped ?? new Promise<void>(() => undefined),
      ]);
    }
  }
  return failures;
}

// ---- the command -----------------------------------------------------------------

const USAGE = [
  'usage: ftp6proxy-compat flags [-m module] "<ftp6proxy_flags>"',
  '       ftp6proxy-compat rcconf [-m module] FILE',
  '       ftp6proxy-compat observe [-m module] [-b base] [-c count] [-a anchor] [-t seconds] [-x seconds]',
  '       ftp6proxy-compat diff SHADOW_LOG OBSERVED',
].join('\n');

export interface CompatIo {
  out: (s: string) => void;
  err: (s: string) => void;
  readFile: (p: string) => string;
  exec?: Exec;
  /** resolves on SIGINT/SIGTERM (observe) */
  signals?: Promise<void>;
}

const realIo = (): CompatIo => ({
  out: (s) => process.stdout.write(s + '\n'),
  err: (s) => process.stderr.write(s + '\n'),
  readFile: (p) => fs.readFileSync(p, 'utf8'),
});

function moduleArg(v: string): ModuleName {
  if (!(MODULES as readonly string[]).includes(v)) throw new UsageError(`-m: unknown module "${v}"; use one of ${MODULES.join(', ')}`);
  return v as ModuleName;
}

export async function compatMain(argv: string[], platformModule: ModuleName, io: CompatIo = realIo()): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'flags': {
        // The flags string itself starts with '-': only a leading `-m module`
        // (or `--`) is ours, the rest is the string (quoted, or as words).
        let module: ModuleName = 'ipfw';
        let words = rest;
        if (words[0] === '-m' && words.length > 1) {
          module = moduleArg(words[1]);
          words = words.slice(2);
        } else if (words[0] !== undefined && words[0].startsWith('-m') && words[0].length > 2 && !words[0].includes(' ')) {
          module = moduleArg(words[0].slice(2));
          words = words.slice(1);
        }
        if (words[0] === '--') words = words.slice(1);
        if (words.length < 1) throw new UsageError('flags: the flags string is missing (quote it)');
        const r = checkFlags(words.join(' '), module);
        for (const l of r.lines) io.out(l);
        return r.ok ? 0 : 1;
      }
      case 'rcconf': {
        const { opts, operands } = getopt(rest, new Set(['m']), new Set());
        if (operands.length !== 1) throw new UsageError('rcconf: exactly one file is needed');
        let module: ModuleName = 'ipfw';
        for (const [c, v] of opts) if (c === 'm') module = moduleArg(v as string);
        let text: string;
        try {
          text = io.readFile(operands[0]);
        } catch (e) {
          io.err(`ftp6proxy-compat: ${operands[0]}: ${(e as Error).message}`);
          return 2;
        }
        const r = checkRcConf(text, module);
        for (const l of r.lines) io.out(l);
        return r.ok ? 0 : 1;
      }
      case 'observe': {
        const { opts, operands } = getopt(rest, new Set(['m', 'b', 'c', 'a', 't', 'x']), new Set());
        if (operands.length > 0) throw new UsageError(`observe: unexpected argument "${operands[0]}"`);
        let module = platformModule;
        for (const [c, v] of opts) if (c === 'm') module = moduleArg(v as string);
        // -b -c -a are checked as ftp6proxy would check them
        const passOn = opts.filter(([c]) => 'bca'.includes(c)).flatMap(([c, v]) => [`-${c}`, v as string]);
        const o = parseOptions(['-m', module, ...passOn], module);
        let intervalMs = 100;
        let durationMs: number | undefined;
        for (const [c, v] of opts) {
          const s = v as string;
          if (c === 't' || c === 'x') {
            if (!/^[0-9]+(\.[0-9]+)?$/.test(s) || Number(s) <= 0) throw new UsageError(`-${c}: "${s}" is not a positive number of seconds`);
            if (c === 't') intervalMs = Math.max(10, Math.round(Number(s) * 1000));
            else durationMs = Math.round(Number(s) * 1000);
          }
        }
        const failures = await observe({
          target: { module, base: o.base, count: o.count, anchor: o.anchor },
          intervalMs,
          durationMs,
          exec: io.exec,
          write: io.out,
          warn: io.err,
          stopped: io.signals,
        });
        return failures > 0 ? 1 : 0;
      }
      case 'diff': {
        if (rest.length !== 2) throw new UsageError('diff: two files are needed');
        const read = (p: string) => io.readFile(p).split('\n');
        const a = openedHoles(read(rest[0]));
        const b = openedHoles(read(rest[1]));
        const d = unifiedDiff([...a].sort(), [...b].sort(), rest[0], rest[1]);
        for (const l of d) io.out(l);
        io.out(`diff: ${a.length} holes in ${rest[0]}, ${b.length} in ${rest[1]}: ${d.length === 0 ? 'same holes' : 'DIFFERENT'}`);
        return d.length === 0 ? 0 : 1;
      }
      case '-h':
      case 'help':
        io.out(USAGE);
        return 0;
      default:
        throw new UsageError(cmd === undefined ? 'a command is needed' : `unknown command "${cmd}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`ftp6proxy-compat: ${e.message}\n${USAGE}`);
      return 2;
    }
    throw e;
  }
}
