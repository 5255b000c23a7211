/* syscalls.h - the syscalls the file I/O faults act on (which method each belongs to), the LSM
 * hook of each syscall SyscallChaos fails, and the architecture's numbers and argument registers.
 *
 * The one source of the syscall table: api/kfault_api/schema.py's IO_METHODS lists the same
 * syscalls per method, and tests/test_syscalls.py fails when the two differ (and when a
 * number here differs from the kernel's asm/unistd_64.h).
 * The loader checks the node's architecture and passes its switch (-DKFAULT_ARCH_X86_64);
 * on any other architecture it refuses the I/O engine before compiling this.
 */
#ifndef KFAULT_SYSCALLS_H
#define KFAULT_SYSCALLS_H

/* Syscall -> method (KFAULT_IO_METHOD_<method>), one line each: X(method, syscall).
 * unlinkat is UNLINK here and RMDIR with AT_REMOVEDIR (iofault.c looks at its flags). */
#define KFAULT_IO_SYSCALLS(X)     \
	X(OPEN, open)             \
	X(OPEN, openat)           \
	X(OPEN, openat2)          \
	X(OPEN, creat)            \
	X(READ, read)             \
	X(READ, pread64)          \
	X(READ, readv)            \
	X(READ, preadv)           \
	X(READ, preadv2)          \
	X(WRITE, write)           \
	X(WRITE, pwrite64)        \
	X(WRITE, writev)          \
	X(WRITE, pwritev)         \
	X(WRITE, pwritev2)        \
	X(FSYNC, fsync)           \
	X(FSYNC, fdatasync)       \
	X(FSYNC, sync_file_range) \
	X(MKDIR, mkdir)           \
	X(MKDIR, mkdirat)         \
	X(RMDIR, rmdir)           \
	X(UNLINK, unlink)         \
	X(UNLINK, unlinkat)       \
	X(READDIR, getdents)      \
	X(READDIR, getdents64)    \
	X(SETATTR, chmod)         \
	X(SETATTR, fchmod)        \
	X(SETATTR, fchmodat)      \
	X(SETATTR, chown)         \
	X(SETATTR, fchown)        \
	X(SETATTR, lchown)        \
	X(SETATTR, fchownat)      \
	X(SETATTR, truncate)      \
	X(SETATTR, ftruncate)     \
	X(SETATTR, utime)         \
	X(SETATTR, utimes)        \
	X(SETATTR, futimesat)     \
	X(SETATTR, utimensat)     \
	X(RENAME, rename)         \
	X(RENAME, renameat)       \
	X(RENAME, renameat2)

/* The stat family: method GETATTR, and what attrOverride rewrites, by the struct each fills:
 * S(layout, syscall). */
#define KFAULT_IO_STAT_SYSCALLS(S) \
	S(STAT, stat)              \
	S(STAT, lstat)             \
	S(STAT, fstat)             \
	S(STAT, newfstatat)        \
	S(STATX, statx)

/* SyscallChaos's faults: the LSM hook that decides each syscall's fault, one line each:
 * X(hook, syscall). syscallfault.c fails at a hook only the calls of the syscalls listed for
 * it (a hook runs for other calls too: a write() on a socket reaches socket_sendmsg).
 * api/kfault_api/syscalls.py's FAULT_HOOKS is the same table (tests/test_syscalls.py). */
#define KFAULT_SC_FAULT_SYSCALLS(X)      \
	X(socket_create, socket)         \
	X(socket_connect, connect)       \
	X(socket_accept, accept)         \
	X(socket_accept, accept4)        \
	X(socket_bind, bind)             \
	X(socket_listen, listen)         \
	X(socket_sendmsg, sendto)        \
	X(socket_sendmsg, sendmsg)       \
	X(socket_recvmsg, recvfrom)      \
	X(socket_recvmsg, recvmsg)       \
	X(task_alloc, fork)              \
	X(task_alloc, vfork)             \
	X(task_alloc, clone)             \
	X(task_alloc, clone3)            \
	X(bprm_creds_for_exec, execve)   \
	X(bprm_creds_for_exec, execveat) \
	X(mmap_file, mmap)               \
	X(file_mprotect, mprotect)       \
	X(file_mprotect, pkey_mprotect)  \
	X(task_kill, kill)               \
	X(task_kill, tkill)              \
	X(task_kill, tgkill)             \
	X(file_ioctl, ioctl)             \
	X(settime, clock_settime)        \
	X(settime, settimeofday)

/* The hooks of that table, each once: syscallfault.c numbers them (enum sc_hook). */
#define KFAULT_SC_HOOKS(H)     \
	H(socket_create)       \
	H(socket_connect)      \
	H(socket_accept)       \
	H(socket_bind)         \
	H(socket_listen)       \
	H(socket_sendmsg)      \
	H(socket_recvmsg)      \
	H(task_alloc)          \
	H(bprm_creds_for_exec) \
	H(mmap_file)           \
	H(file_mprotect)       \
	H(task_kill)           \
	H(file_ioctl)          \
	H(settime)

#if defined(KFAULT_ARCH_X86_64)
/* x86_64 (64-bit ABI) syscall numbers, as in the kernel's arch/x86/entry/syscalls/syscall_64.tbl. */
#define KFAULT_NR_read 0
#define KFAULT_NR_write 1
#define KFAULT_NR_open 2
#define KFAULT_NR_close 3
#define KFAULT_NR_stat 4
#define KFAULT_NR_fstat 5
#define KFAULT_NR_lstat 6
#define KFAULT_NR_mmap 9
#define KFAULT_NR_mprotect 10
#define KFAULT_NR_ioctl 16
#define KFAULT_NR_pread64 17
#define KFAULT_NR_pwrite64 18
#define KFAULT_NR_readv 19
#define KFAULT_NR_writev 20
#define KFAULT_NR_dup 32 /* dup, dup2, dup3, fcntl(F_DUPFD*): a marked fd's copy is marked too */
#define KFAULT_NR_dup2 33
#define KFAULT_NR_socket 41
#define KFAULT_NR_connect 42
#define KFAULT_NR_accept 43
#define KFAULT_NR_sendto 44
#define KFAULT_NR_recvfrom 45
#define KFAULT_NR_sendmsg 46
#define KFAULT_NR_recvmsg 47
#define KFAULT_NR_bind 49
#define KFAULT_NR_listen 50
#define KFAULT_NR_clone 56
#define KFAULT_NR_fork 57
#define KFAULT_NR_vfork 58
#define KFAULT_NR_execve 59
#define KFAULT_NR_kill 62
#define KFAULT_NR_fcntl 72
#define KFAULT_NR_fsync 74
#define KFAULT_NR_fdatasync 75
#define KFAULT_NR_truncate 76
#define KFAULT_NR_ftruncate 77
#define KFAULT_NR_getdents 78
#define KFAULT_NR_chdir 80 /* chdir, fchdir: followed for relative paths, not a method */
#define KFAULT_NR_fchdir 81
#define KFAULT_NR_rename 82
#define KFAULT_NR_mkdir 83
#define KFAULT_NR_rmdir 84
#define KFAULT_NR_creat 85
#define KFAULT_NR_unlink 87
#define KFAULT_NR_chmod 90
#define KFAULT_NR_fchmod 91
#define KFAULT_NR_chown 92
#define KFAULT_NR_fchown 93
#define KFAULT_NR_lchown 94
#define KFAULT_NR_utime 132
#define KFAULT_NR_settimeofday 164
#define KFAULT_NR_tkill 200
#define KFAULT_NR_io_submit 209 /* libaio: its iocbs are decided one by one (iofault.c's io_aio_submit) */
#define KFAULT_NR_getdents64 217
#define KFAULT_NR_clock_settime 227
#define KFAULT_NR_tgkill 234
#define KFAULT_NR_utimes 235
#define KFAULT_NR_openat 257
#define KFAULT_NR_mkdirat 258
#define KFAULT_NR_fchownat 260
#define KFAULT_NR_futimesat 261
#define KFAULT_NR_newfstatat 262
#define KFAULT_NR_unlinkat 263
#define KFAULT_NR_renameat 264
#define KFAULT_NR_fchmodat 268
#define KFAULT_NR_sync_file_range 277
#define KFAULT_NR_utimensat 280
#define KFAULT_NR_accept4 288
#define KFAULT_NR_dup3 292
#define KFAULT_NR_preadv 295
#define KFAULT_NR_pwritev 296
#define KFAULT_NR_renameat2 316
#define KFAULT_NR_execveat 322
#define KFAULT_NR_preadv2 327
#define KFAULT_NR_pwritev2 328
#define KFAULT_NR_pkey_mprotect 329
#define KFAULT_NR_statx 332
#define KFAULT_NR_io_uring_enter 426 /* where a submitter's io_uring requests are issued inline */
#define KFAULT_NR_clone3 435
#define KFAULT_NR_openat2 437

/* The syscall arguments in the pt_regs that sys_enter gets (the fourth is r10, not cx). */
#define KFAULT_SYSCALL_ARG0(regs) (&(regs)->di)
#define KFAULT_SYSCALL_ARG1(regs) (&(regs)->si)
#define KFAULT_SYSCALL_ARG2(regs) (&(regs)->dx)
#define KFAULT_SYSCALL_ARG3(regs) (&(regs)->r10)
#define KFAULT_SYSCALL_ARG4(regs) (&(regs)->r8)
/* The number of the syscall a task is in, in its pt_regs (-1 outside one), and where the thread
 * resumes in user space at sys_exit (the return address and stack pointer a signal handler's
 * frame would change). */
#define KFAULT_SYSCALL_NR(regs) (&(regs)->orig_ax)
#define KFAULT_USER_IP(regs) (&(regs)->ip)
#define KFAULT_USER_SP(regs) (&(regs)->sp)
#else
#error "kfault's file I/O faults know the syscall table of x86_64 only: the loader passes -DKFAULT_ARCH_X86_64 there and refuses the I/O engine elsewhere"
#endif

#endif /* KFAULT_SYSCALLS_H */
