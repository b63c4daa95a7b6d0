/*
 * bench/nfq-null.c: a baseline for `npm run bench`, not part of ftp6proxy.
 *
 * The smallest NFQUEUE reader there is: it binds queue N, and gives every
 * packet the ACCEPT verdict at once, clearing the selective ruleset's
 * see-all bit (mark 0x100000) as ftp6proxy -s does for a packet outside a
 * multi-line reply.  It reads nothing and opens no hole (the bench lets the
 * data connection through with a rule of its own).  Its gateway transit of
 * the 229 reply is what the kernel and a process wake-up cost on this
 * machine, the floor under any user-space helper; bench/nfq-null.ts is the
 * same in Node.js, through ftp6proxy's own capture code.
 *
 *   cc -O2 -o nfq-null bench/nfq-null.c && ./nfq-null QUEUE
 *
 * Layouts: include/uapi/linux/netlink.h, netfilter/nfnetlink.h,
 * netfilter/nfnetlink_queue.h (as in src/capture/nfqueue.ts).
 */
#include <arpa/inet.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define VERDICT_ACCEPT 1   /* NF_ACCEPT, include/uapi/linux/netfilter.h */
#define SEE_ALL 0x100000u  /* the lab's -s bit (test/lab/lab.ts SELECTIVE_BITS) */

static int fd;
static uint32_t seq = 1;

/* one nfnetlink message to the kernel: nlmsghdr, nfgenmsg, then `attrs` */
static int send_nfq(uint16_t type, uint16_t flags, uint16_t queue, const void *attrs, size_t alen) {
  unsigned char buf[128];
  struct nlmsghdr *nh = (struct nlmsghdr *)buf;
  struct nfgenmsg *g = (struct nfgenmsg *)(buf + NLMSG_HDRLEN);
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  size_t len = NLMSG_HDRLEN + sizeof *g + alen;
  if (len > sizeof buf) return -1;
  memset(buf, 0, len);
  nh->nlmsg_len = (uint32_t)len;
  nh->nlmsg_type = (uint16_t)((NFNL_SUBSYS_QUEUE << 8) | type);
  nh->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags);
  nh->nlmsg_seq = seq++;
  g->nfgen_family = AF_UNSPEC;
  g->version = NFNETLINK_V0;
  g->res_id = htons(queue);
  memcpy(buf + NLMSG_HDRLEN + sizeof *g, attrs, alen);
  return (int)sendto(fd, buf, len, 0, (struct sockaddr *)&kernel, sizeof kernel);
}

/* an attribute at `p`: header, payload, padded to 4 */
static size_t put_attr(unsigned char *p, uint16_t type, const void *data, uint16_t dlen) {
  struct nlattr *a = (struct nlattr *)p;
  a->nla_len = (uint16_t)(NLA_HDRLEN + dlen);
  a->nla_type = type;
  memcpy(p + NLA_HDRLEN, data, dlen);
  return NLA_ALIGN(a->nla_len);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: nfq-null QUEUE\n");
    return 1;
  }
  uint16_t queue = (uint16_t)atoi(argv[1]);
  fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
  struct sockaddr_nl self = {.nl_family = AF_NETLINK};
  if (fd < 0 || bind(fd, (struct sockaddr *)&self, sizeof self) < 0) {
    perror("nfq-null: netlink socket");
    return 1;
  }
  unsigned char a[64];
  size_t n;
  struct nfqnl_msg_config_cmd cmd = {.command = NFQNL_CFG_CMD_BIND};
  n = put_attr(a, NFQA_CFG_CMD, &cmd, sizeof cmd);
  if (send_nfq(NFQNL_MSG_CONFIG, 0, queue, a, n) < 0) return 1;
  struct nfqnl_msg_config_params params = {.copy_range = htonl(0xffff), .copy_mode = NFQNL_COPY_PACKET};
  n = put_attr(a, NFQA_CFG_PARAMS, &params, sizeof params);
  if (send_nfq(NFQNL_MSG_CONFIG, 0, queue, a, n) < 0) return 1;

  static unsigned char buf[70000];
  for (;;) {
    ssize_t got = recv(fd, buf, sizeof buf, 0);
    if (got < (ssize_t)(NLMSG_HDRLEN + sizeof(struct nfgenmsg))) continue;
    struct nlmsghdr *nh = (struct nlmsghdr *)buf;
    if (nh->nlmsg_type == NLMSG_ERROR) {
      struct nlmsgerr *e = (struct nlmsgerr *)NLMSG_DATA(nh);
      if (e->error != 0) {
        fprintf(stderr, "nfq-null: netlink error %d\n", e->error);
        return 1;
      }
      continue;
    }
    if ((nh->nlmsg_type & 0xff) != NFQNL_MSG_PACKET) continue;
    uint32_t id = 0, mark = 0;
    int have_id = 0;
    size_t end = nh->nlmsg_len < (size_t)got ? nh->nlmsg_len : (size_t)got;
    for (size_t off = NLMSG_HDRLEN + sizeof(struct nfgenmsg); off + NLA_HDRLEN <= end;) {
      struct nlattr *at = (struct nlattr *)(buf + off);
      if (at->nla_len < NLA_HDRLEN || off + at->nla_len > end) break;
      uint16_t type = at->nla_type & NLA_TYPE_MASK;
      if (type == NFQA_PACKET_HDR && at->nla_len >= NLA_HDRLEN + sizeof(struct nfqnl_msg_packet_hdr)) {
        struct nfqnl_msg_packet_hdr ph;
        memcpy(&ph, buf + off + NLA_HDRLEN, sizeof ph);
        id = ntohl(ph.packet_id);
        have_id = 1;
      } else if (type == NFQA_MARK && at->nla_len >= NLA_HDRLEN + 4) {
        memcpy(&mark, buf + off + NLA_HDRLEN, 4);
        mark = ntohl(mark);
      }
      off += NLA_ALIGN(at->nla_len);
    }
    if (!have_id) continue;
    struct nfqnl_msg_verdict_hdr vh = {.verdict = htonl(VERDICT_ACCEPT), .id = htonl(id)};
    uint32_t newmark = htonl(mark & ~SEE_ALL);
    n = put_attr(a, NFQA_VERDICT_HDR, &vh, sizeof vh);
    n += put_attr(a + n, NFQA_MARK, &newmark, sizeof newmark);
    send_nfq(NFQNL_MSG_VERDICT, 0, queue, a, n);
  }
}
