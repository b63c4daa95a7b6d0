// ftp6proxy native shim: generic system calls that Node.js cannot make.
//
// Every protocol encoding (netlink, BSD sockaddr_in with sin_len, sockaddr_un,
// netgraph messages) lives in TypeScript.  This file only moves raw bytes
// between JavaScript and the kernel:
//   socket / socketpair / bind / connect / sendto / recvfrom / recv /
//   setsockopt / getsockopt / close, readiness through uv_poll (which libuv
//   runs on epoll on Linux and kqueue on FreeBSD), and the two privilege calls
//   Node lacks: chroot(2) and getpwnam(3).
// Errors are thrown as Error objects with `code` (errno name) and `errno`.
// The same source builds on Linux and FreeBSD.

#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>
#include <netinet/in.h>
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

namespace {

Napi::Value ThrowErrno(Napi::Env env, const char *syscall, int err) {
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + ": " + strerror(err));
  e.Set("code", Napi::String::New(env, uv_err_name(-err)));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
  return env.Undefined();
}

bool ArgInt(const Napi::CallbackInfo &info, size_t i, int *out) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a number")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::Number>().Int32Value();
  return true;
}

bool ArgBuf(const Napi::CallbackInfo &info, size_t i, Napi::Buffer<uint8_t> *out) {
  if (info.Length() <= i || !info[i].IsBuffer()) {
    Napi::TypeError::New(info.Env(), "argument " + std::to_string(i) + " must be a Buffer")
        .ThrowAsJavaScriptException();
    return false;
  }
  *out = info[i].As<Napi::Buffer<uint8_t>>();
  return true;
}

int SetNonBlockCloexec(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
  int fdfl = fcntl(fd, F_GETFD);
  if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0) return -1;
  return 0;
}

// socket(domain, type, protocol) -> fd (non-blocking, close-on-exec)
Napi::Value Socket(const Napi::CallbackInfo &info) {
  int domain, type, protocol;
  if (!ArgInt(info, 0, &domain) || !ArgInt(info, 1, &type) || !ArgInt(info, 2, &protocol))
    return info.Env().Undefined();
  int fd = socket(domain, type, protocol);
  if (fd < 0) return ThrowErrno(info.Env(), "socket", errno);
  if (SetNonBlockCloexec(fd) < 0) {
    int err = errno;
    close(fd);
    return ThrowErrno(info.Env(), "fcntl", err);
  }
  return Napi::Number::New(info.Env(), fd);
}

// socketpair(domain, type, protocol) -> [fd0, fd1]
Napi::Value SocketPair(const Napi::CallbackInfo &info) {
  int domain, type, protocol;
  if (!ArgInt(info, 0, &domain) || !ArgInt(info, 1, &type) || !ArgInt(info, 2, &protocol))
    return info.Env().Undefined();
  int sv[2];
  if (socketpair(domain, type, protocol, sv) < 0) return ThrowErrno(info.Env(), "socketpair", errno);
  for (int fd : sv) {
    if (SetNonBlockCloexec(fd) < 0) {
      int err = errno;
      close(sv[0]);
      close(sv[1]);
      return ThrowErrno(info.Env(), "fcntl", err);
    }
  }
  Napi::Array a = Napi::Array::New(info.Env(), 2);
  a.Set(uint32_t(0), Napi::Number::New(info.Env(), sv[0]));
  a.Set(uint32_t(1), Napi::Number::New(info.Env(), sv[1]));
  return a;
}

// bind(fd, sockaddrBytes) / connect(fd, sockaddrBytes)
Napi::Value Bind(const Napi::CallbackInfo &info) {
  int fd;
  Napi::Buffer<uint8_t> sa;
  if (!ArgInt(info, 0, &fd) || !ArgBuf(info, 1, &sa)) return info.Env().Undefined();
  if (bind(fd, reinterpret_cast<const sockaddr *>(sa.Data()), socklen_t(sa.Length())) < 0)
    return ThrowErrno(info.Env(), "bind", errno);
  return info.Env().Undefined();
}

Napi::Value Connect(const Napi::CallbackInfo &info) {
  int fd;
  Napi::Buffer<uint8_t> sa;
  if (!ArgInt(info, 0, &fd) || !ArgBuf(info, 1, &sa)) return info.Env().Undefined();
  if (connect(fd, reinterpret_cast<const sockaddr *>(sa.Data()), socklen_t(sa.Length())) < 0)
    return ThrowErrno(info.Env(), "connect", errno);
  return info.Env().Undefined();
}

// sendto(fd, data, sockaddrBytes | null, flags) -> bytes sent
Napi::Value SendTo(const Napi::CallbackInfo &info) {
  int fd, flags = 0;
  Napi::Buffer<uint8_t> data;
  if (!ArgInt(info, 0, &fd) || !ArgBuf(info, 1, &data)) return info.Env().Undefined();
  if (info.Length() > 3 && !ArgInt(info, 3, &flags)) return info.Env().Undefined();
  const sockaddr *sa = nullptr;
  socklen_t salen = 0;
  if (info.Length() > 2 && info[2].IsBuffer()) {
    auto b = info[2].As<Napi::Buffer<uint8_t>>();
    sa = reinterpret_cast<const sockaddr *>(b.Data());
    salen = socklen_t(b.Length());
  }
  ssize_t n;
  do {
    n = sendto(fd, data.Data(), data.Length(), flags, sa, salen);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return ThrowErrno(info.Env(), "sendto", errno);
  return Napi::Number::New(info.Env(), double(n));
}

// (fd, buffer[, flags]): the arguments of recvfrom and recv
bool RecvArgs(const Napi::CallbackInfo &info, int *fd, Napi::Buffer<uint8_t> *buf, int *flags) {
  *flags = 0;
  return ArgInt(info, 0, fd) && ArgBuf(info, 1, buf) && (info.Length() <= 2 || ArgInt(info, 2, flags));
}

// recvfrom(fd, buffer, flags) -> { n, addr } or null when it would block.
// n is the datagram's real length when MSG_TRUNC is honoured by the kernel.
Napi::Value RecvFrom(const Napi::CallbackInfo &info) {
  int fd, flags;
  Napi::Buffer<uint8_t> buf;
  if (!RecvArgs(info, &fd, &buf, &flags)) return info.Env().Undefined();
  sockaddr_storage ss;
  socklen_t sslen = sizeof(ss);
  memset(&ss, 0, sizeof(ss));
  ssize_t n;
  do {
    n = recvfrom(fd, buf.Data(), buf.Length(), flags, reinterpret_cast<sockaddr *>(&ss), &sslen);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return info.Env().Null();
    return ThrowErrno(info.Env(), "recvfrom", errno);
  }
  if (sslen > sizeof(ss)) sslen = sizeof(ss);
  Napi::Object r = Napi::Object::New(info.Env());
  r.Set("n", Napi::Number::New(info.Env(), double(n)));
  r.Set("addr", Napi::Buffer<uint8_t>::Copy(info.Env(), reinterpret_cast<uint8_t *>(&ss), sslen));
  return r;
}

// recv(fd, buffer, flags) -> bytes received, or -1 when it would block.
// recvfrom without the peer's address and without a result object: for
// sockets whose peer is known (netlink: the kernel), read on every packet.
Napi::Value Recv(const Napi::CallbackInfo &info) {
  int fd, flags;
  Napi::Buffer<uint8_t> buf;
  if (!RecvArgs(info, &fd, &buf, &flags)) return info.Env().Undefined();
  ssize_t n;
  do {
    n = recv(fd, buf.Data(), buf.Length(), flags);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(info.Env(), -1);
    return ThrowErrno(info.Env(), "recv", errno);
  }
  return Napi::Number::New(info.Env(), double(n));
}

// setsockopt(fd, level, name, valueBytes)
Napi::Value SetSockOpt(const Napi::CallbackInfo &info) {
  int fd, level, name;
  Napi::Buffer<uint8_t> val;
  if (!ArgInt(info, 0, &fd) || !ArgInt(info, 1, &level) || !ArgInt(info, 2, &name) ||
      !ArgBuf(info, 3, &val))
    return info.Env().Undefined();
  if (setsockopt(fd, level, name, val.Data(), socklen_t(val.Length())) < 0)
    return ThrowErrno(info.Env(), "setsockopt", errno);
  return info.Env().Undefined();
}

// getsockopt(fd, level, name, maxLength) -> Buffer
Napi::Value GetSockOpt(const Napi::CallbackInfo &info) {
  int fd, level, name, len;
  if (!ArgInt(info, 0, &fd) || !ArgInt(info, 1, &level) || !ArgInt(info, 2, &name) ||
      !ArgInt(info, 3, &len))
    return info.Env().Undefined();
  if (len < 0 || len > 65536) return ThrowErrno(info.Env(), "getsockopt", EINVAL);
  std::string tmp(size_t(len), '\0');
  socklen_t sl = socklen_t(len);
  if (getsockopt(fd, level, name, &tmp[0], &sl) < 0) return ThrowErrno(info.Env(), "getsockopt", errno);
  return Napi::Buffer<uint8_t>::Copy(info.Env(), reinterpret_cast<const uint8_t *>(tmp.data()), sl);
}

Napi::Value Close(const Napi::CallbackInfo &info) {
  int fd;
  if (!ArgInt(info, 0, &fd)) return info.Env().Undefined();
  if (close(fd) < 0 && errno != EINTR) return ThrowErrno(info.Env(), "close", errno);
  return info.Env().Undefined();
}

Napi::Value Chroot(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(info.Env(), "path must be a string").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  std::string path = info[0].As<Napi::String>();
  if (chroot(path.c_str()) < 0) return ThrowErrno(info.Env(), "chroot", errno);
  if (chdir("/") < 0) return ThrowErrno(info.Env(), "chdir", errno);
  return info.Env().Undefined();
}

// getpwnam(name) -> { name, uid, gid, dir } or null
Napi::Value GetPwNam(const Napi::CallbackInfo &info) {
  if (info.Length() < 1 || !info[0].IsString()) {
    Napi::TypeError::New(info.Env(), "name must be a string").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  std::string name = info[0].As<Napi::String>();
  struct passwd pw, *res = nullptr;
  std::string buf(16384, '\0');
  int err = getpwnam_r(name.c_str(), &pw, &buf[0], buf.size(), &res);
  if (err != 0) return ThrowErrno(info.Env(), "getpwnam_r", err);
  if (res == nullptr) return info.Env().Null();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("name", Napi::String::New(info.Env(), pw.pw_name));
  o.Set("uid", Napi::Number::New(info.Env(), double(pw.pw_uid)));
  o.Set("gid", Napi::Number::New(info.Env(), double(pw.pw_gid)));
  o.Set("dir", Napi::String::New(info.Env(), pw.pw_dir ? pw.pw_dir : ""));
  return o;
}

#ifdef __linux__
// Linux capabilities, for keeping CAP_NET_ADMIN across setuid (nfnetlink checks
// the current task's capability on every message).  The structures
// (struct __user_cap_header_struct, struct __user_cap_data_struct[2]) are
// encoded in TypeScript; these only pass the bytes to the raw system calls.
// Capabilities are per thread: call them from the main (JavaScript) thread.

// setKeepCaps(on): prctl(PR_SET_KEEPCAPS, on)
Napi::Value SetKeepCaps(const Napi::CallbackInfo &info) {
  int on;
  if (!ArgInt(info, 0, &on)) return info.Env().Undefined();
  if (prctl(PR_SET_KEEPCAPS, on ? 1 : 0, 0, 0, 0) < 0) return ThrowErrno(info.Env(), "prctl", errno);
  return info.Env().Undefined();
}

// capget(header, data): the kernel fills data (and header on EINVAL)
Napi::Value CapGet(const Napi::CallbackInfo &info) {
  Napi::Buffer<uint8_t> hdr, data;
  if (!ArgBuf(info, 0, &hdr) || !ArgBuf(info, 1, &data)) return info.Env().Undefined();
  if (hdr.Length() < 8 || data.Length() < 24) return ThrowErrno(info.Env(), "capget", EINVAL);
  if (syscall(SYS_capget, hdr.Data(), data.Data()) < 0) return ThrowErrno(info.Env(), "capget", errno);
  return info.Env().Undefined();
}

// capset(header, data)
Napi::Value CapSet(const Napi::CallbackInfo &info) {
  Napi::Buffer<uint8_t> hdr, data;
  if (!ArgBuf(info, 0, &hdr) || !ArgBuf(info, 1, &data)) return info.Env().Undefined();
  if (hdr.Length() < 8 || data.Length() < 24) return ThrowErrno(info.Env(), "capset", EINVAL);
  if (syscall(SYS_capset, hdr.Data(), data.Data()) < 0) return ThrowErrno(info.Env(), "capset", errno);
  return info.Env().Undefined();
}
#endif

// Poller: readiness callbacks for one descriptor through uv_poll.
class Poller : public Napi::ObjectWrap<Poller> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Poller",
                       {InstanceMethod("start", &Poller::Start), InstanceMethod("stop", &Poller::Stop)});
  }

  explicit Poller(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Poller>(info) {
    int fd;
    if (!ArgInt(info, 0, &fd)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      Napi::TypeError::New(info.Env(), "callback must be a function").ThrowAsJavaScriptException();
      return;
    }
    cb_ = Napi::Persistent(info[1].As<Napi::Function>());
    handle_ = new uv_poll_t;
    handle_->data = this;
    uv_loop_t *loop = nullptr;
    napi_get_uv_event_loop(info.Env(), &loop);
    int r = uv_poll_init_socket(loop, handle_, fd);
    if (r != 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowErrno(info.Env(), "uv_poll_init", -r);
    }
  }

  ~Poller() override { Release(); }

 private:
  // start(events): 1 = readable, 2 = writable
  Napi::Value Start(const Napi::CallbackInfo &info) {
    int events;
    if (!ArgInt(info, 0, &events)) return info.Env().Undefined();
    if (handle_ == nullptr) return ThrowErrno(info.Env(), "uv_poll_start", EBADF);
    int r = uv_poll_start(handle_, events, OnPoll);
    if (r != 0) return ThrowErrno(info.Env(), "uv_poll_start", -r);
    if (!active_) {
      active_ = true;
      Ref();  // keep the wrapper alive while the handle may call back
    }
    return info.Env().Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo &info) {
    Release();
    return info.Env().Undefined();
  }

  void Release() {
    if (handle_ != nullptr) {
      uv_poll_stop(handle_);
      uv_close(reinterpret_cast<uv_handle_t *>(handle_),
               [](uv_handle_t *h) { delete reinterpret_cast<uv_poll_t *>(h); });
      handle_ = nullptr;
    }
    if (active_) {
      active_ = false;
      Unref();
    }
  }

  static void OnPoll(uv_poll_t *h, int status, int events) {
    Poller *self = static_cast<Poller *>(h->data);
    Napi::Env env = self->cb_.Env();
    Napi::HandleScope scope(env);
    // MakeCallback runs microtasks and surfaces exceptions as uncaught ones.
    self->cb_.MakeCallback(env.Global(), {Napi::Number::New(env, status), Napi::Number::New(env, events)});
  }

  Napi::FunctionReference cb_;
  uv_poll_t *handle_ = nullptr;
  bool active_ = false;
};

Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
#define C(x) c.Set(#x, Napi::Number::New(env, x))
  C(AF_UNIX);
  C(AF_INET);
  C(AF_INET6);
  C(SOCK_STREAM);
  C(SOCK_DGRAM);
  C(SOCK_RAW);
  C(SOL_SOCKET);
  C(SO_RCVBUF);
  C(SO_SNDBUF);
  C(SO_ERROR);
  C(MSG_DONTWAIT);
  C(MSG_TRUNC);
  C(EAGAIN);
  C(ENOBUFS);
  C(EAFNOSUPPORT);
  C(EPROTONOSUPPORT);
  C(EPERM);
  C(ENOENT);
  C(EINVAL);
#ifdef __linux__
  C(AF_NETLINK);
  C(SO_RCVBUFFORCE);
#endif
#undef C
  return c;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("socket", Napi::Function::New(env, Socket));
  exports.Set("socketpair", Napi::Function::New(env, SocketPair));
  exports.Set("bind", Napi::Function::New(env, Bind));
  exports.Set("connect", Napi::Function::New(env, Connect));
  exports.Set("sendto", Napi::Function::New(env, SendTo));
  exports.Set("recvfrom", Napi::Function::New(env, RecvFrom));
  exports.Set("recv", Napi::Function::New(env, Recv));
  exports.Set("setsockopt", Napi::Function::New(env, SetSockOpt));
  exports.Set("getsockopt", Napi::Function::New(env, GetSockOpt));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("chroot", Napi::Function::New(env, Chroot));
  exports.Set("getpwnam", Napi::Function::New(env, GetPwNam));
#ifdef __linux__
  exports.Set("setKeepCaps", Napi::Function::New(env, SetKeepCaps));
  exports.Set("capget", Napi::Function::New(env, CapGet));
  exports.Set("capset", Napi::Function::New(env, CapSet));
#endif
  exports.Set("Poller", Poller::Init(env));
  exports.Set("constants", Constants(env));
  exports.Set("platform", Napi::String::New(env,
#if defined(__FreeBSD__)
                                            "freebsd"
#elif defined(__linux__)
                                            "linux"
#else
                                            "other"
#endif
                                            ));
  return exports;
}

}  // namespace

NODE_API_MODULE(ftp6proxy_native, Init)
