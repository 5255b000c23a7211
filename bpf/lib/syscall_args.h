/* syscall_args.h - what a syscall's number and arguments say: its method, the path or fd it
 * names, the buffer it reads or writes. Owns no map. */
#ifndef KFAULT_LIB_SYSCALL_ARGS_H
#define KFAULT_LIB_SYSCALL_ARGS_H

#include <linux/ptrace.h>

#include "kfault.h"
#include "scratch.h"
#include "syscalls.h"

#define NO_METHOD 0xff
#define IO_F_DUPFD 0 /* fcntl commands that copy an fd (linux/fcntl.h) */
#define IO_F_DUPFD_CLOEXEC 1030
#define IO_AT_REMOVEDIR 0x200 /* unlinkat's flag that makes it an rmdir (linux/fcntl.h) */
#define IO_O_CREAT 0100       /* x86_64's, like syscalls.h (asm-generic/fcntl.h) */

/* clang-format off */
#define METHOD_CASE(method, syscall) case KFAULT_NR_##syscall: return KFAULT_IO_METHOD_##method;
#define STAT_CASE(layout, syscall) case KFAULT_NR_##syscall: return KFAULT_IO_METHOD_GETATTR;

/* The method a syscall belongs to (syscalls.h), or NO_METHOD. */
static __always_inline __u32 method_of(__u64 nr)
{
	switch (nr) {
	KFAULT_IO_SYSCALLS(METHOD_CASE)
	KFAULT_IO_STAT_SYSCALLS(STAT_CASE)
	}
	return NO_METHOD;
}
/* clang-format on */

static __always_inline __u64 syscall_arg(const struct pt_regs *regs, int n)
{
	unsigned long value = 0;

	switch (n) {
	case 0:
		bpf_probe_read_kernel(&value, sizeof(value), KFAULT_SYSCALL_ARG0(regs));
		break;
	case 1:
		bpf_probe_read_kernel(&value, sizeof(value), KFAULT_SYSCALL_ARG1(regs));
		break;
	case 2:
		bpf_probe_read_kernel(&value, sizeof(value), KFAULT_SYSCALL_ARG2(regs));
		break;
	case 4:
		bpf_probe_read_kernel(&value, sizeof(value), KFAULT_SYSCALL_ARG4(regs));
		break;
	}
	return value;
}

/* Does this open have O_CREAT (creat always does)? openat2 keeps its flags in struct open_how,
 * whose first field they are. */
static __always_inline int open_creates(__u64 nr, const struct pt_regs *regs)
{
	__u64 flags = 0;

	if (nr == KFAULT_NR_creat)
		return 1;
	if (nr == KFAULT_NR_open)
		flags = syscall_arg(regs, 1);
	else if (nr == KFAULT_NR_openat)
		flags = syscall_arg(regs, 2);
	else if (nr == KFAULT_NR_openat2)
		bpf_probe_read_user(&flags, sizeof(flags), (void *)syscall_arg(regs, 2));
	return (flags & IO_O_CREAT) != 0;
}

static __always_inline int copies_fd(__u64 nr)
{
	return nr == KFAULT_NR_dup || nr == KFAULT_NR_dup2 || nr == KFAULT_NR_dup3 || nr == KFAULT_NR_fcntl;
}

/* chdir and fchdir: not a method, but followed, for the relative paths that come after. */
static __always_inline int changes_cwd(__u64 nr)
{
	return nr == KFAULT_NR_chdir || nr == KFAULT_NR_fchdir;
}

static __always_inline int is_vector(__u64 nr)
{
	return nr == KFAULT_NR_readv || nr == KFAULT_NR_preadv || nr == KFAULT_NR_preadv2 || nr == KFAULT_NR_writev ||
	       nr == KFAULT_NR_pwritev || nr == KFAULT_NR_pwritev2;
}

/* Where a call names its file by path: the path's argument and its directory fd (AT_FDCWD
 * for the calls without one); -1 for calls on an fd. */
static __always_inline int path_argument(__u64 nr, const struct pt_regs *regs, __s32 *dirfd)
{
	*dirfd = KFAULT_IO_AT_FDCWD;
	if (nr == KFAULT_NR_open || nr == KFAULT_NR_creat || nr == KFAULT_NR_stat || nr == KFAULT_NR_lstat ||
	    nr == KFAULT_NR_mkdir || nr == KFAULT_NR_rmdir || nr == KFAULT_NR_unlink || nr == KFAULT_NR_chmod ||
	    nr == KFAULT_NR_chown || nr == KFAULT_NR_lchown || nr == KFAULT_NR_truncate || nr == KFAULT_NR_utime ||
	    nr == KFAULT_NR_utimes || nr == KFAULT_NR_rename || nr == KFAULT_NR_chdir)
		return 0;
	if (nr == KFAULT_NR_openat || nr == KFAULT_NR_openat2 || nr == KFAULT_NR_newfstatat || nr == KFAULT_NR_statx ||
	    nr == KFAULT_NR_mkdirat || nr == KFAULT_NR_unlinkat || nr == KFAULT_NR_fchmodat ||
	    nr == KFAULT_NR_fchownat || nr == KFAULT_NR_futimesat || nr == KFAULT_NR_utimensat ||
	    nr == KFAULT_NR_renameat || nr == KFAULT_NR_renameat2) {
		*dirfd = (__s32)syscall_arg(regs, 0);
		return 1;
	}
	return -1;
}

/* The user buffer attrOverride or mistake may rewrite, and what it holds. */
static __always_inline void note_buffer(__u64 nr, __u32 method, const struct pt_regs *regs, struct io_scratch *scratch)
{
	scratch->buffer = 0;
	scratch->layout = 0;
	scratch->length = 0;
	if (method == KFAULT_IO_METHOD_READ || method == KFAULT_IO_METHOD_WRITE) {
		scratch->buffer = syscall_arg(regs, 1);
		/* a write's bytes; a vector's count: io_corrupt reads iovec[0] */
		scratch->length = syscall_arg(regs, 2);
		scratch->layout = is_vector(nr) ? KFAULT_IO_LAYOUT_IOVEC : KFAULT_IO_LAYOUT_BUFFER;
	} else if (nr == KFAULT_NR_statx) {
		scratch->buffer = syscall_arg(regs, 4);
		scratch->layout = KFAULT_IO_LAYOUT_STATX;
	} else if (method == KFAULT_IO_METHOD_GETATTR) {
		scratch->buffer = syscall_arg(regs, nr == KFAULT_NR_newfstatat ? 2 : 1);
		scratch->layout = KFAULT_IO_LAYOUT_STAT;
	}
}

#endif /* KFAULT_LIB_SYSCALL_ARGS_H */
