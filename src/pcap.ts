/**
 * pcap(5) file reading, pure: the classic libpcap format (microsecond and
 * nanosecond magic, either byte order), and the link layers a gateway's
 * tcpdump writes.  Link types from https://www.tcpdump.org/linktypes.html
 * (LINKTYPE_NULL 0, ETHERNET 1, RAW 101, LOOP 108, LINUX_SLL 113,
 * IPV4 228, IPV6 229, LINUX_SLL2 276; DLT_RAW is 12 or 14 on some BSDs).
 */

export interface PcapRecord {
  /** capture time, ms since the epoch (fractional) */
  time: number;
  /** the IP packet, link layer stripped; null when the frame is not IP */
  ip: Uint8Array | null;
}

export interface PcapFile {
  linktype: number;
  records: PcapRecord[];
  /** set when the file ended inside a record or had a bad record header */
  damage?: string;
}

export class PcapFormatError extends Error {}

const ETH_IPV4 = 0x0800;
const ETH_IPV6 = 0x86dd;
const ETH_VLAN = [0x8100, 0x88a8, 0x9100];

/** BSD AF_INET6 differs between systems: 24 (NetBSD/OpenBSD), 28 (FreeBSD), 30 (Darwin); AF_INET is 2. */
function bsdFamilyIsIp(af: number): boolean {
  return af === 2 || af === 24 || af === 28 || af === 30;
}

function byEthertype(type: number, frame: Uint8Array, off: number): Uint8Array | null {
  if (type === ETH_IPV4 || type === ETH_IPV6) return frame.subarray(off);
  return null;
}

/** Strip the link layer; null if it is not an IP packet. */
export function linkPayload(linktype: number, frame: Uint8Array): Uint8Array | null {
  const be16 = (o: number) => (frame[o] << 8) | frame[o + 1];
  switch (linktype) {
    case 1: { // Ethernet II, with up to two VLAN tags
      if (frame.length < 14) return null;
      let off = 12;
      let type = be16(off);
      for (let tags = 0; ETH_VLAN.includes(type) && tags < 2; tags++) {
        off += 4;
        if (frame.length < off + 2) return null;
        type = be16(off);
      }
      return byEthertype(type, frame, off + 2);
    }
    case 101: case 12: case 14: case 228: case 229: // raw IP
      return frame.length > 0 ? frame : null;
    case 113: // Linux cooked v1: protocol at offset 14, header 16 bytes
      return frame.length < 16 ? null : byEthertype(be16(14), frame, 16);
    case 276: // Linux cooked v2: protocol at offset 0, header 20 bytes
      return frame.length < 20 ? null : byEthertype(be16(0), frame, 20);
    case 0: { // BSD null: 4-byte address family in the writer's byte order
      if (frame.length < 4) return null;
      const le = frame[0] | (frame[1] << 8) | (frame[2] << 16) | (frame[3] << 24);
      const be = (frame[0] << 24) | (frame[1] << 16) | (frame[2] << 8) | frame[3];
      return bsdFamilyIsIp(le) || bsdFamilyIsIp(be) ? frame.subarray(4) : null;
    }
    case 108: { // OpenBSD loop: address family in network order
      if (frame.length < 4) return null;
      const be = (frame[0] << 24) | (frame[1] << 16) | (frame[2] << 8) | frame[3];
      return bsdFamilyIsIp(be) ? frame.subarray(4) : null;
    }
    default:
      return null;
  }
}

/** Parse a whole pcap file.  Throws PcapFormatError only when it is not a pcap file at all. */
export function parsePcap(buf: Uint8Array): PcapFile {
  if (buf.length < 24) throw new PcapFormatError('not a pcap file: shorter than its 24-byte header');
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magicLE = dv.getUint32(0, true);
  let le: boolean;
  let nano: boolean;
  if (magicLE === 0xa1b2c3d4) { le = true; nano = false; }
  else if (magicLE === 0xa1b23c4d) { le = true; nano = true; }
  else if (magicLE === 0xd4c3b2a1) { le = false; nano = false; }
  else if (magicLE === 0x4d3cb2a1) { le = false; nano = true; }
  else if (magicLE === 0x0a0d0d0a) throw new PcapFormatError('pcapng is not supported: convert with `editcap -F pcap`');
  else throw new PcapFormatError('not a pcap file: bad magic number');
  const snaplen = dv.getUint32(16, le);
  const linktype = dv.getUint32(20, le) & 0x0fffffff; // upper bits: FCS length flags
  const records: PcapRecord[] = [];
  let off = 24;
  let damage: string | undefined;
  const maxIncl = Math.max(snaplen, 262144);
  while (off < buf.length) {
    if (off + 16 > buf.length) { damage = `truncated record header at offset ${off}`; break; }
    const sec = dv.getUint32(off, le);
    const frac = dv.getUint32(off + 4, le);
    const incl = dv.getUint32(off + 8, le);
    if (incl > maxIncl) { damage = `record at offset ${off} claims ${incl} bytes`; break; }
    if (off + 16 + incl > buf.length) { damage = `truncated record at offset ${off}`; break; }
    const frame = buf.subarray(off + 16, off + 16 + incl);
    records.push({ time: sec * 1000 + (nano ? frac / 1e6 : frac / 1e3), ip: linkPayload(linktype, frame) });
    off += 16 + incl;
  }
  return { linktype, records, damage };
}
