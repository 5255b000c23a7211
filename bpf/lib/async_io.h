/* async_io.h - what libaio's iocbs and io_uring's requests say: their method, their file, and
 * which thread issues them. Declares the maps the file hooks use to decide each io_uring
 * request once (their calls stay in iofault.c: bcc rewrites map calls only in the file it
 * compiles).
 *
 * io_uring's struct io_kiocb and the task's flags are not UAPI: the loader passes their
 * offsets from the running kernel's BTF (kernel/btf.py) as KFAULT_OFF_* flags, and
 * KFAULT_IO_URING only when it found them all. The kernel facts this relies on, from 6.1's and
 * 6.18's io_uring/io_uring.c, io_uring/rw.c, io_uring/io-wq.c and fs/aio.c:
 * - io_submit_sqe traces io_uring_submit_sqe (6.1) / io_uring_submit_req (6.5+) once per
 *   request, in the thread that submits it (the caller of io_uring_enter, or the SQPOLL
 *   thread), after io_init_req set its opcode, flags (the SQE's IOSQE_* in the low bits) and
 *   fd, and before the request is first issued;
 * - io_read/io_write call rw_verify_area (security_file_permission) at every issue attempt:
 *   inline, again from task work after a buffered read waited for its page, and again in an
 *   io-wq worker after a punt; a buffered write to a file system without async buffered
 *   writes, or a file without FMODE_NOWAIT, is punted before its first call;
 * - io-wq workers and SQPOLL threads are PF_IO_WORKER threads of the process that block every
 *   signal but SIGKILL and SIGSTOP; a worker's worker_private is its struct io_worker, whose
 *   cur_work is the request it issues (&req->work);
 * - io_file_get_normal takes a request's file from the submitter's fd table
 *   (task->files->fdt->fd[fd]) at its first issue, in the submitter or in a worker sharing it;
 * - libaio's aio_read/aio_write call rw_verify_area in the io_submit caller, once per iocb,
 *   and a refusal is io_submit's own result (the iocbs before it are submitted).
 */
#ifndef KFAULT_LIB_ASYNC_IO_H
#define KFAULT_LIB_ASYNC_IO_H

#include <linux/aio_abi.h> /* struct iocb, IOCB_CMD_* (UAPI) */

#include "kfault.h"
#include "current_syscall.h"
#include "syscall_args.h"

#define IO_PF_IO_WORKER 0x10   /* task_struct.flags: an io_uring kernel thread (linux/sched.h) */
#define IO_IOSQE_FIXED_FILE 1u /* io_kiocb.flags' low bits are the SQE's flags (linux/io_uring.h) */

/* io_uring opcodes (linux/io_uring.h's enum io_uring_op; numbers are ABI). */
#define IO_IORING_OP_READV 1
#define IO_IORING_OP_WRITEV 2
#define IO_IORING_OP_FSYNC 3
#define IO_IORING_OP_READ_FIXED 4
#define IO_IORING_OP_WRITE_FIXED 5
#define IO_IORING_OP_OPENAT 18
#define IO_IORING_OP_STATX 21
#define IO_IORING_OP_READ 22
#define IO_IORING_OP_WRITE 23
#define IO_IORING_OP_OPENAT2 28
#define IO_IORING_OP_RENAMEAT 35
#define IO_IORING_OP_UNLINKAT 36
#define IO_IORING_OP_MKDIRAT 37
#define IO_IORING_OP_READ_MULTISHOT 49
#define IO_IORING_OP_FTRUNCATE 55
#define IO_IORING_OP_READV_FIXED 60
#define IO_IORING_OP_WRITEV_FIXED 61

/* The method of an io_uring opcode, or NO_METHOD. Those by path (openat, statx, ...) have no
 * fd to match and are counted as out of reach for every rule on their method. */
static __always_inline __u32 uring_method(__u8 opcode)
{
	switch (opcode) {
	case IO_IORING_OP_READV:
	case IO_IORING_OP_READ_FIXED:
	case IO_IORING_OP_READ:
	case IO_IORING_OP_READ_MULTISHOT:
	case IO_IORING_OP_READV_FIXED:
		return KFAULT_IO_METHOD_READ;
	case IO_IORING_OP_WRITEV:
	case IO_IORING_OP_WRITE_FIXED:
	case IO_IORING_OP_WRITE:
	case IO_IORING_OP_WRITEV_FIXED:
		return KFAULT_IO_METHOD_WRITE;
	case IO_IORING_OP_FSYNC:
		return KFAULT_IO_METHOD_FSYNC;
	case IO_IORING_OP_OPENAT:
	case IO_IORING_OP_OPENAT2:
		return KFAULT_IO_METHOD_OPEN;
	case IO_IORING_OP_STATX:
		return KFAULT_IO_METHOD_GETATTR;
	case IO_IORING_OP_RENAMEAT:
		return KFAULT_IO_METHOD_RENAME;
	case IO_IORING_OP_UNLINKAT:
		return KFAULT_IO_METHOD_UNLINK;
	case IO_IORING_OP_MKDIRAT:
		return KFAULT_IO_METHOD_MKDIR;
	case IO_IORING_OP_FTRUNCATE:
		return KFAULT_IO_METHOD_SETATTR;
	}
	return NO_METHOD;
}

/* The method of a libaio iocb's command, or NO_METHOD (poll, noop). */
static __always_inline __u32 aio_method(__u16 command)
{
	switch (command) {
	case IOCB_CMD_PREAD:
	case IOCB_CMD_PREADV:
		return KFAULT_IO_METHOD_READ;
	case IOCB_CMD_PWRITE:
	case IOCB_CMD_PWRITEV:
		return KFAULT_IO_METHOD_WRITE;
	case IOCB_CMD_FSYNC:
	case IOCB_CMD_FDSYNC:
		return KFAULT_IO_METHOD_FSYNC;
	}
	return NO_METHOD;
}

/* Is the current thread an io_uring kernel thread (io-wq worker, SQPOLL)? */
static __always_inline int in_io_thread(void)
{
#ifdef KFAULT_IO_URING
	__u32 flags = 0;

	bpf_probe_read_kernel(&flags, sizeof(flags), (void *)bpf_get_current_task() + KFAULT_OFF_TASK_FLAGS);
	return (flags & IO_PF_IO_WORKER) != 0;
#else
	return 0;
#endif
}

/* One field of a kernel struct at a BTF offset, or 0. */
static __always_inline __u64 kernel_u64(__u64 base, __u64 offset)
{
	__u64 value = 0;

	bpf_probe_read_kernel(&value, sizeof(value), (void *)(base + offset));
	return value;
}

#if defined(KFAULT_IO_FILE_HOOKS) && defined(KFAULT_IO_URING)
/* The request an io-wq worker is issuing (its io_worker's cur_work, inside the io_kiocb), or 0
 * for an SQPOLL thread, which has no io_worker. */
static __always_inline __u64 worker_request(void)
{
	__u64 worker = kernel_u64(bpf_get_current_task(), KFAULT_OFF_TASK_WORKER_PRIVATE), work;

	if (!worker)
		return 0;
	work = kernel_u64(worker, KFAULT_OFF_IO_WORKER_CUR_WORK);
	return work ? work - KFAULT_OFF_IO_KIOCB_WORK : 0;
}

/* The struct file an fd names in the current task's fd table (files->fdt->fd[fd], bounded by
 * max_fds), or 0: what io_uring's request will issue on, found in the submitter before its
 * first attempt (io_file_get_normal takes it from the same table, in the same thread for an
 * inline issue, a moment later for a punted one). */
static __always_inline __u64 fd_file(__s32 fd)
{
	__u64 files = kernel_u64(bpf_get_current_task(), KFAULT_OFF_TASK_FILES), fdt, fds;
	__u32 max_fds = 0;

	if (!files || fd < 0)
		return 0;
	fdt = kernel_u64(files, KFAULT_OFF_FILES_STRUCT_FDT);
	if (!fdt)
		return 0;
	bpf_probe_read_kernel(&max_fds, sizeof(max_fds), (void *)(fdt + KFAULT_OFF_FDTABLE_MAX_FDS));
	if ((__u32)fd >= max_fds)
		return 0;
	fds = kernel_u64(fdt, KFAULT_OFF_FDTABLE_FD);
	return fds ? kernel_u64(fds, (__u64)fd * sizeof(__u64)) : 0;
}

/* kfault_io_uring_pending's value for a request io_uring_submit could not decide (its file's
 * match was not known there): its first attempt's file hook decides it. Any other value is the
 * errno decided at its submission (0: none), given by that hook. Not an errno (those are <= 0). */
#define IO_URING_UNDECIDED 1

/* req -> what the file hook does at its first attempt (IO_URING_UNDECIDED, or the errno decided
 * at submission): written at its submission, taken by that hook; later attempts get nothing. */
BPF_TABLE("lru_hash", __u64, __s32, kfault_io_uring_pending, KFAULT_IO_MAX_CALLS);
/* tid -> the last request it submitted: the one its inline attempt is issuing. */
BPF_TABLE("lru_hash", __u32, __u64, kfault_io_uring_submitted, KFAULT_IO_MAX_CALLS);
#endif

#endif /* KFAULT_LIB_ASYNC_IO_H */
