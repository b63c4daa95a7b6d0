import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseLine, type Direction, type ParseResult } from '../../src/ftp';
import { formatAddr } from '../../src/addr';

/** A compact, comparable rendering of a result. */
function show(r: ParseResult): string {
  switch (r.kind) {
    case 'none':
      return 'none';
    case 'passive':
      return `passive ${r.cmd}`;
    case 'error':
      return `error ${r.via}: ${r.reason}`;
    case 'announce':
      return `${r.via} ${r.family === null ? '-' : r.family} ${r.addr === null ? '-' : formatAddr(r.family!, r.addr)} ${r.port}`;
  }
}

type Row = [Direction, string, string];

const good: Row[] = [
  // PORT, case-insensitive, with leading spaces and trailing CR
  ['client', 'PORT 198,18,1,2,195,80', 'PORT 4 198.18.1.2 50000'],
  ['client', 'port 198,18,1,2,195,80\r', 'PORT 4 198.18.1.2 50000'],
  ['client', 'PoRt  198,18,1,2,0,1', 'PORT 4 198.18.1.2 1'],
  ['client', 'PORT 198,18,1,2,255,255  ', 'PORT 4 198.18.1.2 65535'],
  ['client', 'PORT 0,0,0,0,4,0', 'PORT 4 0.0.0.0 1024'],
  // EPRT with several delimiters
  ['client', 'EPRT |1|198.18.1.2|50000|', 'EPRT 4 198.18.1.2 50000'],
  ['client', 'eprt |2|fd00:1::2|50000|', 'EPRT 6 fd00:1::2 50000'],
  ['client', 'EPRT !2!FD00:1:0:0:0:0:0:2!6446!', 'EPRT 6 fd00:1::2 6446'],
  ['client', 'EPRT ~2~::ffff:198.18.1.2~1~', 'EPRT 6 ::ffff:198.18.1.2 1'],
  ['client', 'EPRT ,1,198.18.1.2,65535,', 'EPRT 4 198.18.1.2 65535'],
  // LPRT
  ['client', 'LPRT 4,4,198,18,1,2,2,195,80', 'LPRT 4 198.18.1.2 50000'],
  ['client', 'LPRT 6,16,253,0,0,1,0,0,0,0,0,0,0,0,0,0,0,2,2,195,80', 'LPRT 6 fd00:1::2 50000'],
  // passive commands
  ['client', 'PASV', 'passive PASV'],
  ['client', 'pasv', 'passive PASV'],
  ['client', 'EPSV', 'passive EPSV'],
  ['client', 'EPSV 2', 'passive EPSV'],
  ['client', 'EPSV ALL', 'passive EPSV'],
  ['client', 'LPSV', 'passive LPSV'],
  // 227: with and without parentheses (RFC 1123 4.1.2.6)
  ['server', '227 Entering Passive Mode (198,18,2,2,195,80).', '227 4 198.18.2.2 50000'],
  ['server', '227 Entering Passive Mode 198,18,2,2,195,80', '227 4 198.18.2.2 50000'],
  ['server', '227 =198,18,2,2,195,80', '227 4 198.18.2.2 50000'],
  ['server', '227 ok (198,18,2,2,4,1) thanks 1,2,3', '227 4 198.18.2.2 1025'],
  // 228
  ['server', '228 Entering Long Passive Mode (4,4,198,18,2,2,2,195,80)', '228 4 198.18.2.2 50000'],
  ['server', '228 Entering Long Passive Mode (6,16,253,0,0,2,0,0,0,0,0,0,0,0,0,0,0,2,2,195,80)', '228 6 fd00:2::2 50000'],
  // 229 with odd delimiters (RFC 2428: 33..126)
  ['server', '229 Entering Extended Passive Mode (|||50000|)', '229 - - 50000'],
  ['server', '229 Entering Extended Passive Mode (!!!50000!)', '229 - - 50000'],
  ['server', '229 EPSV ok (~~~1~)', '229 - - 1'],
  ['server', '229 x (___65535_)', '229 - - 65535'],
  ['server', '229 x ((((2000()', '229 - - 2000'],
];

const hostile: Row[] = [
  // octet 256 anywhere
  ['client', 'PORT 198,18,1,256,195,80', 'error PORT: octet 256 > 255'],
  ['client', 'PORT 198,18,1,2,256,0', 'error PORT: octet 256 > 255'],
  ['client', 'PORT 198,18,1,2,195,1000', 'error PORT: octet 1000 > 255'],
  ['client', 'PORT 198,18,1,2,195,999999', 'error PORT: number too long'],
  ['server', '227 Entering Passive Mode (198,18,2,256,195,80)', 'error 227: octet 256 > 255'],
  ['client', 'LPRT 4,4,198,18,1,300,2,195,80', 'error LPRT: octet 300 > 255'],
  // port 0 and 65536
  ['client', 'PORT 198,18,1,2,0,0', 'error PORT: port 0'],
  ['client', 'EPRT |1|198.18.1.2|0|', 'error EPRT: port 0'],
  ['client', 'EPRT |1|198.18.1.2|65536|', 'error EPRT: port 65536 > 65535'],
  ['client', 'EPRT |1|198.18.1.2|123456|', 'error EPRT: port too long'],
  ['server', '229 Entering Extended Passive Mode (|||0|)', 'error 229: port 0'],
  ['server', '229 Entering Extended Passive Mode (|||65536|)', 'error 229: port 65536 > 65535'],
  ['server', '227 Entering Passive Mode (198,18,2,2,0,0)', 'error 227: port 0'],
  ['client', 'LPRT 4,4,198,18,1,2,2,0,0', 'error LPRT: port 0'],
  // wrong EPRT family for the address, unknown family
  ['client', 'EPRT |1|fd00:1::2|50000|', 'error EPRT: family 1 but address fd00:1::2'],
  ['client', 'EPRT |2|198.18.1.2|50000|', 'error EPRT: family 2 but address 198.18.1.2'],
  ['client', 'EPRT |3|198.18.1.2|50000|', 'error EPRT: unknown address family 3'],
  ['client', 'EPRT |12|198.18.1.2|50000|', 'error EPRT: unknown address family 12'],
  ['client', 'EPRT |1|198.18.1|50000|', 'error EPRT: bad address "198.18.1"'],
  ['client', 'EPRT |2|fd00::1%eth0|50000|', 'error EPRT: bad address "fd00::1%eth0"'],
  // delimiters
  ['client', 'EPRT |1|198.18.1.2!50000!', 'error EPRT: expected delimiter after address'],
  ['client', 'EPRT 1198.18.1.21500001', 'error EPRT: bad delimiter near "1198.18.1.215000..."'],
  ['client', 'EPRT |1|198.18.1.2|50000', 'error EPRT: expected delimiter at end of line'],
  ['client', 'EPRT |1|198.18.1.2|50000|x', 'error EPRT: trailing garbage near "x"'],
  ['server', '229 Entering Extended Passive Mode (|!|50000|)', "error 229: expected empty protocol field near \"!|50000|)\""],
  ['server', '229 Entering Extended Passive Mode (|||50000!)', 'error 229: expected delimiter near "!)"'],
  ['server', '229 Entering Extended Passive Mode (||1|50000|)', 'error 229: expected empty address field near "1|50000|)"'],
  ['server', '229 Entering Extended Passive Mode (1112001)', 'error 229: bad delimiter near "1112001)"'],
  ['server', '229 Entering Extended Passive Mode (|||50000|', "error 229: expected ')' at end of line"],
  ['server', '229 Entering Extended Passive Mode |||50000|', "error 229: no '(' in reply"],
  ['server', '229 Entering Extended Passive Mode ( || 50000|)', 'error 229: bad delimiter near " || 50000|)"'],
  // NUL
  ['client', 'PORT 198,18,1,2,195,80\0', 'error PORT: NUL in line'],
  ['client', 'EPRT |1|198.18.\0.2|50000|', 'error EPRT: NUL in line'],
  ['server', '227 Entering\0 Passive Mode (198,18,2,2,195,80)', 'error 227: NUL in line'],
  // overlong
  ['client', 'PORT 198,18,1,2,195,80' + ' '.repeat(600), 'error PORT: line too long (622 > 512)'],
  ['server', '227 ' + 'x'.repeat(600) + '(198,18,2,2,195,80)', 'error 227: line too long (623 > 512)'],
  // malformed forms
  ['client', 'PORT 198,18,1,2,195', "error PORT: expected ',' at end of line"],
  ['client', 'PORT 198,18,1,2,195,80,7', 'error PORT: trailing garbage near ",7"'],
  ['client', 'PORT', 'error PORT: expected number at end of line'],
  ['client', 'PORT -1,18,1,2,195,80', 'error PORT: expected number near "-1,18,1,2,195,80"'],
  ['server', '227 Entering Passive Mode', 'error 227: no address in reply'],
  ['server', '227 Entering Passive Mode (198,18,2,2,195)', "error 227: expected ',' near \")\""],
  ['client', 'LPRT 4,16,198,18,1,2,2,195,80', 'error LPRT: address family 4 length 16'],
  ['client', 'LPRT 6,4,198,18,1,2,2,195,80', 'error LPRT: address family 6 length 4'],
  ['client', 'LPRT 4,4,198,18,1,2,3,195,80,1', 'error LPRT: port length 3'],
  ['server', '228 Entering Long Passive Mode (4,4,198,18,2,2,2,195)', "error 228: expected ',' near \")\""],
];

// Lines that must not announce anything.
const nothing: Row[] = [
  // a reply-looking line sent by the client
  ['client', '227 Entering Passive Mode (198,18,2,2,195,80)', 'none'],
  ['client', '229 Entering Extended Passive Mode (|||50000|)', 'none'],
  ['client', '228 Entering Long Passive Mode (4,4,198,18,2,2,2,195,80)', 'none'],
  // a command sent by the server
  ['server', 'PORT 198,18,2,2,195,80', 'none'],
  ['server', 'EPRT |1|198.18.2.2|50000|', 'none'],
  ['server', 'PASV', 'none'],
  // multi-line reply starts and other replies
  ['server', '227-Entering Passive Mode (198,18,2,2,195,80)', 'none'],
  ['server', '229-Entering Extended Passive Mode (|||50000|)', 'none'],
  ['server', '227', 'none'],
  ['server', '200 PORT command successful (198,18,2,2,195,80)', 'none'],
  ['server', '150 Opening BINARY mode data connection', 'none'],
  ['server', ' 227 Entering Passive Mode (198,18,2,2,195,80)', 'none'],
  ['server', '', 'none'],
  // other commands, prefixes of the words
  ['client', 'PORTS 198,18,1,2,195,80', 'none'],
  ['client', 'PASVX', 'none'],
  ['client', 'RETR PORT 198,18,1,2,195,80', 'none'],
  ['client', 'STOR file\0name', 'none'],
  ['client', 'USER anonymous', 'none'],
  ['client', 'POR', 'none'],
  ['client', '', 'none'],
];

test('announcements', () => {
  for (const [dir, line, want] of good) assert.is(show(parseLine(dir, line)), want, `${dir}: ${line}`);
});

test('hostile and malformed lines', () => {
  for (const [dir, line, want] of hostile) assert.is(show(parseLine(dir, line)), want, `${dir}: ${JSON.stringify(line)}`);
});

test('lines that announce nothing (including replies sent by a client)', () => {
  for (const [dir, line, want] of nothing) assert.is(show(parseLine(dir, line)), want, `${dir}: ${JSON.stringify(line)}`);
});

test('bytes and strings parse the same; maxLine is a parameter', () => {
  const line = 'EPRT |2|fd00:1::2|50000|';
  assert.is(show(parseLine('client', Buffer.from(line, 'latin1'))), show(parseLine('client', line)));
  assert.is(show(parseLine('client', line, 20)), 'error EPRT: line too long (24 > 20)');
});

test('random lines never throw', () => {
  let x = 99;
  const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  const seeds = [...good, ...hostile].map(([d, l]) => [d, Buffer.from(l, 'latin1')] as const);
  for (let i = 0; i < 20000; i++) {
    const [dir, src] = seeds[i % seeds.length];
    const b = Uint8Array.from(src);
    for (let k = 0; k < 3; k++) if (b.length > 5) b[5 + (rnd() % (b.length - 5))] = rnd();
    const r = parseLine(dir, b);
    if (r.kind === 'announce') {
      assert.ok(r.port >= 1 && r.port <= 65535);
      if (r.addr !== null) assert.is(r.addr.length, r.family === 4 ? 4 : 16);
    }
  }
});

test.run();
