/**
 * Make untrusted bytes safe for a log line (syslog, a terminal): printable
 * ASCII stays, the rest becomes \xNN, with \r \n \t spelled out, and a
 * backslash or double quote is escaped so the result can sit in "...".
 * Long input is cut at `max` characters of output and marked with "...".
 */
export function escapeUntrusted(input: Uint8Array | string, max = 80): string {
  let out = '';
  const n = input.length;
  for (let i = 0; i < n; i++) {
    const c = typeof input === 'string' ? input.charCodeAt(i) : input[i];
    let piece: string;
    if (c === 0x0d) piece = '\\r';
    else if (c === 0x0a) piece = '\\n';
    else if (c === 0x09) piece = '\\t';
    else if (c === 0x5c) piece = '\\\\';
    else if (c === 0x22) piece = '\\"';
    else if (c >= 0x20 && c < 0x7f) piece = String.fromCharCode(c);
    else if (c <= 0xff) piece = '\\x' + c.toString(16).padStart(2, '0');
    else piece = '\\u' + c.toString(16).padStart(4, '0');
    if (out.length + piece.length > max) return out + '...';
    out += piece;
  }
  return out;
}
