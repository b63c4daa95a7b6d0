#!/bin/sh
# scripts/lab-deps.sh: install the Debian packages the network-namespace lab
# (test/lab/) needs. Idempotent; run as root. Prints exactly which package is
# missing when it cannot install it, and exits 1 in that case.
#
# Debian's FTP servers all declare `Conflicts: ftp-server` (vsftpd, pure-ftpd,
# proftpd-core), so only vsftpd is installed the normal way. The second server
# is python3-pyftpdlib (no conflict). pure-ftpd is optional: its .deb is
# fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
# $LAB_CACHE (default /var/cache/ftp6proxy-lab), after its shared-library
# dependencies are installed normally. Nothing comes from outside Debian.
set -u

LAB_CACHE=${LAB_CACHE:-/var/cache/ftp6proxy-lab}

# Debian package -> a file that proves it is installed.
REQUIRED="
iproute2:/usr/sbin/ip
nftables:/usr/sbin/nft
iptables:/usr/sbin/iptables
conntrack:/usr/sbin/conntrack
tcpdump:/usr/bin/tcpdump
vsftpd:/usr/sbin/vsftpd
python3-pyftpdlib:/usr/lib/python3/dist-packages/pyftpdlib/__init__.py
curl:/usr/bin/curl
lftp:/usr/bin/lftp
tnftp:/usr/bin/tnftp
wget:/usr/bin/wget
rsyslog:/usr/sbin/rsyslogd
mandoc:/usr/bin/mandoc
"
# Shared libraries /usr/sbin/pure-ftpd links against (apt-cache depends pure-ftpd).
PUREFTPD_LIBS="libcap2 libcrypt1 libpam0g libsodium23 libssl3"

if [ "$(id -u)" != 0 ]; then
  echo "lab-deps: must run as root (apt-get install)" >&2
  exit 1
fi

missing=""
for entry in $REQUIRED; do
  pkg=${entry%%:*}; file=${entry#*:}
  [ -e "$file" ] || missing="$missing $pkg"
done

if [ -n "$missing" ]; then
  echo "lab-deps: installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update >/dev/null 2>&1
    apt-get install -y --no-install-recommends $missing >/dev/null 2>&1
  }
fi

failed=""
for entry in $REQUIRED; do
  pkg=${entry%%:*}; file=${entry#*:}
  [ -e "$file" ] || failed="$failed $pkg"
done
if [ -n "$failed" ]; then
  echo "lab-deps: MISSING Debian package(s):$failed" >&2
  echo "lab-deps: install them with: apt-get install$failed" >&2
  exit 1
fi

# Optional third server: pure-ftpd, unpacked beside the system (no conflict).
if [ ! -x "$LAB_CACHE/pure-ftpd/usr/sbin/pure-ftpd" ]; then
  export DEBIAN_FRONTEND=noninteractive
  if apt-get install -y --no-install-recommends $PUREFTPD_LIBS >/dev/null 2>&1 &&
     mkdir -p "$LAB_CACHE" &&
     (cd "$LAB_CACHE" && rm -f pure-ftpd_*.deb && apt-get download pure-ftpd >/dev/null 2>&1) &&
     dpkg-deb -x "$LAB_CACHE"/pure-ftpd_*.deb "$LAB_CACHE/pure-ftpd"; then
    :
  else
    echo "lab-deps: optional pure-ftpd not available (needs: apt-get download pure-ftpd; libs:$PUREFTPD_LIBS); the lab uses vsftpd and pyftpdlib" >&2
  fi
fi

echo "lab-deps: ok (vsftpd, pyftpdlib$( [ -x "$LAB_CACHE/pure-ftpd/usr/sbin/pure-ftpd" ] && echo ", pure-ftpd in $LAB_CACHE"); clients curl, lftp, tnftp, wget)"
