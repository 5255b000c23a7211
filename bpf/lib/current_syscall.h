/* current_syscall.h - the syscall the current task is in, read where only a hook's arguments
 * are at hand (an LSM hook, a file hook): its pt_regs' orig_ax. Owns no map. */
#ifndef KFAULT_LIB_CURRENT_SYSCALL_H
#define KFAULT_LIB_CURRENT_SYSCALL_H

#include <linux/ptrace.h>

#include "syscalls.h"

/* The syscall the current task is in (bpf_task_pt_regs, 5.15+), or -1 outside one (a kernel
 * thread's registers say -1 too). */
static __always_inline __u64 current_syscall(void)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__u64 nr = -1;

	bpf_probe_read_kernel(&nr, sizeof(nr), KFAULT_SYSCALL_NR(regs));
	return nr;
}

#endif /* KFAULT_LIB_CURRENT_SYSCALL_H */
