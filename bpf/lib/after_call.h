/* after_call.h - fault on fsync: the call is failed after it ran.
 *
 * No security hook runs before fsync, fdatasync or sync_file_range takes effect, and fmod_ret
 * on the syscall itself needs CONFIG_FUNCTION_ERROR_INJECTION, which Debian's kernels lack. So
 * the call runs (the data is synced), and as it returns the agent's holder (holder.py), which
 * the thread's signal stops in its signal-delivery stop, puts -errno in its result register:
 * the application is told the sync failed. At sys_exit iofault.c records here what identifies
 * that very return; the holder writes only while the registers are still those (a handled
 * signal delivered first has moved ip and sp to its handler's frame). Map calls stay in
 * iofault.c (bcc rewrites them only there). */
#ifndef KFAULT_LIB_AFTER_CALL_H
#define KFAULT_LIB_AFTER_CALL_H

#include <linux/ptrace.h>

#include "kfault.h"
#include "syscalls.h"

/* tid -> the failure to give at the thread's stop as its call returns: written by io_sys_exit,
 * taken (read and deleted) by the holder at that stop. LRU: a record whose stop never came
 * (the thread was killed first) ages out, and io_sys_exit drops the thread's record before a
 * held call's stop, so a stale one is never given to another call. */
BPF_TABLE("lru_hash", __u32, struct kfault_io_fail, kfault_io_fails, KFAULT_IO_MAX_HOLDS);
/* slot -> failures io_sys_exit counted that the holder could not give (the registers had
 * changed): written by the holder, read by the agent, which counts them passed. */
BPF_ARRAY(kfault_io_missed, __u64, KFAULT_IO_MAX_RULES);

/* Is a fault on `method` given after the call (schema.FAILED_AFTER_CALL)? */
static __always_inline int fails_after_call(__u32 method)
{
	return method == KFAULT_IO_METHOD_FSYNC;
}

/* The record of this return from a syscall (regs: sys_exit's), to fail it with `error`. */
static __always_inline void note_return(struct kfault_io_fail *fail, const struct pt_regs *regs, __u32 slot,
					__u32 error)
{
	__u64 nr = 0;

	bpf_probe_read_kernel(&nr, sizeof(nr), KFAULT_SYSCALL_NR(regs));
	bpf_probe_read_kernel(&fail->ip, sizeof(fail->ip), KFAULT_USER_IP(regs));
	bpf_probe_read_kernel(&fail->sp, sizeof(fail->sp), KFAULT_USER_SP(regs));
	fail->nr = nr;
	fail->error = error;
	fail->slot = slot;
}

#endif /* KFAULT_LIB_AFTER_CALL_H */
