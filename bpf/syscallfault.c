/* syscallfault.c - SyscallChaos: fail or delay the system calls of processes in target cgroups.
 *
 *   lsm__<hook>    BPF LSM hooks (syscalls.h's     fault: fail a call of a syscall a rule names,
 *                  KFAULT_SC_FAULT_SYSCALLS)       before it takes effect, with the rule's errno
 *   sc_sys_exit    raw tracepoint sys_exit         latency: have the holder hold the thread as
 *                                                  its call returns
 *
 * A hook runs for more than the syscalls it stands for (socket_sendmsg for a write() on a
 * socket, mmap_file while execve maps the program, task_alloc for every thread), so each fails
 * only calls of the syscalls the table lists for it, by the number the thread is in (orig_ax
 * of its registers), and only the syscalls a rule names. Each hook runs once per call of its
 * syscalls (file_mprotect: once per mapping an mprotect changes), so one roll decides a call.
 *
 * The agent attaches a hook only while an armed fault rule names one of its syscalls, and the
 * sys_exit tracepoint only while a latency rule is armed: with faults alone, a task outside the
 * targets pays, at the hooks of the named syscalls, one array load and one cgroup test per rule
 * on that hook, and nothing at other calls.
 *
 * Latency at the exit, not the entry: a call that waits interruptibly (connect, a read on a
 * socket) would be interrupted by the holder's signal sent at its entry; at its exit the call
 * is done, and the thread is held before it sees the result (holder.py, as for file I/O).
 *
 * Every map call is in this file: bcc rewrites `map.lookup()` only in the file it compiles.
 */
#include <linux/types.h>
#include <linux/ptrace.h>

#include "kfault.h"
#include "lib/current_syscall.h"
#include "syscalls.h"

#define SC_SIGSTOP 19           /* x86_64's, like syscalls.h: stops any process; it can't catch it */
#define SC_CLONE_THREAD 0x10000 /* linux/sched.h: the new task is a thread of the caller's process */

/* The hooks, numbered in syscalls.h's order (the agent's syscalls.HOOKS, from 1): hook_of says
 * which one stands for a syscall. */
#define SC_HOOK_ENUM(hook) SC_HOOK_##hook,
enum sc_hook {
	SC_HOOK_NONE = 0,
	KFAULT_SC_HOOKS(SC_HOOK_ENUM) SC_HOOK_COUNT
};

/* slot -> rule. Written by the agent (whole value), read here. */
BPF_ARRAY(kfault_sc_rules, struct kfault_sc_rule, KFAULT_SC_MAX_RULES);
/* Slot i: the target cgroup (v2) of rule i; bpf_current_task_under_cgroup covers its subtree. */
BPF_CGROUP_ARRAY(kfault_sc_cgroups, KFAULT_SC_MAX_RULES);
/* KFAULT_SC_ACT_* -> mask of the armed slots of that action, written by the agent: a hook or
 * the tracepoint with nothing armed for it costs one array load. */
BPF_ARRAY(kfault_sc_armed, __u32, KFAULT_SC_ACT_SLOTS);
/* SC_HOOK_* -> mask of the armed fault slots whose rule names a syscall of that hook, written by
 * the agent (set after the slot is armed, cleared before it is disarmed): a hook's first test,
 * one array load, which leaves a task outside the targets one cgroup test per such rule. */
BPF_ARRAY(kfault_sc_hook_rules, __u32, KFAULT_SC_HOOK_SLOTS);
_Static_assert(SC_HOOK_COUNT <= KFAULT_SC_HOOK_SLOTS, "a hook without a slot in kfault_sc_hook_rules");
/* Syscall number -> mask of the slots whose rule names it, written by the agent (set after the
 * slot is armed, cleared before it is disarmed). */
BPF_ARRAY(kfault_sc_syscalls, __u32, KFAULT_SC_MAX_NR);
/* slot * KFAULT_SC_MAX_NR + syscall -> per-CPU counters. Written here, read by the agent at
 * scrape time. */
BPF_PERCPU_ARRAY(kfault_sc_counters, struct kfault_sc_counters, KFAULT_SC_COUNTER_SLOTS);

/* The holder's maps (holder.py), as iofault.c's kfault_io_* of the same names:
 * tgid -> the signal the holder asked for, or 0 (it can't hold that process). */
BPF_HASH(kfault_sc_traced, __u32, __u32, KFAULT_SC_MAX_TRACED);
/* tgid -> 1: a targeted process the holder did not know yet, stopped here with SIGSTOP at its
 * first delayed call; the holder seizes it, ends the stop and holds the call. */
BPF_HASH(kfault_sc_stopped, __u32, __u32, KFAULT_SC_MAX_TRACED);
/* Rung after each entry in kfault_sc_stopped: the holders sleep on it. What it carries is not read. */
BPF_RINGBUF_OUTPUT(kfault_sc_stop_bell, 1);
/* Slot i: 1 while the holder of latency rule i runs and takes what is stopped for it. */
BPF_ARRAY(kfault_sc_holders, __u32, KFAULT_SC_MAX_RULES);
/* tid -> nanoseconds to hold it: written here before the signal, read by the holder. */
BPF_HASH(kfault_sc_holds, __u32, __u64, KFAULT_SC_MAX_HOLDS);

/* clang-format off */
#define SC_HOOK_CASE(hook, syscall) case KFAULT_NR_##syscall: return SC_HOOK_##hook;

/* The hook that decides a fault of syscall `nr` (syscalls.h), or SC_HOOK_NONE. */
static __always_inline __u32 hook_of(__u64 nr)
{
	switch (nr) {
	KFAULT_SC_FAULT_SYSCALLS(SC_HOOK_CASE)
	}
	return SC_HOOK_NONE;
}
/* clang-format on */

/* The rules of `candidates` whose target cgroup (or one below it) holds the current task: one
 * helper call per candidate, each bit set without a branch on its answer (iofault.c's
 * targeting_rules says why). */
static __always_inline __u32 targeting_rules(__u32 candidates)
{
	__u32 found = 0;

#pragma unroll 16
	for (int i = 0; i < KFAULT_SC_MAX_RULES; i++) {
		if (!(candidates >> i))
			break;
		if (candidates & (1u << i)) {
			__u64 not_under = (__u64)(kfault_sc_cgroups.check_current_task(i) - 1) >> 63;

			asm volatile("" : "+r"(not_under));
			found |= (__u32)(not_under ^ 1) << i;
		}
	}
	return found;
}

static __always_inline __u32 armed_for(__u32 action)
{
	__u32 *mask = kfault_sc_armed.lookup(&action);

	return mask ? *mask : 0;
}

/* The slots whose rule names syscall `nr`. */
static __always_inline __u32 rules_naming(__u64 nr)
{
	__u32 key = nr, *mask;

	if (nr >= KFAULT_SC_MAX_NR)
		return 0;
	mask = kfault_sc_syscalls.lookup(&key);
	return mask ? *mask : 0;
}

/* Add `calls` (0 or 1) calls of syscall `nr` with this outcome to slot's counters. */
static __always_inline void count(__u32 slot, __u64 nr, __u32 outcome, __u64 delay_ns, __u64 calls)
{
	__u32 index = slot * KFAULT_SC_MAX_NR + (nr & (KFAULT_SC_MAX_NR - 1));
	struct kfault_sc_counters *counters;

	/* the masks bound both indices for the verifier (clang must not drop them) */
	asm volatile("" : "+r"(index));
	index &= KFAULT_SC_COUNTER_SLOTS - 1;
	outcome &= KFAULT_SC_OUTCOME_COUNT - 1;
	counters = kfault_sc_counters.lookup(&index);
	if (!counters)
		return;
	counters->calls[outcome] += calls;
	counters->delay_ns += delay_ns;
}

/* 1 if this call gets `rule`'s action, else 0: the rule is live (now before its deadline; 0 is
 * expired too, kfault.h) and the roll is under its threshold (2^32: always). Arithmetic, not
 * comparisons: BPF has no conditional set, so a comparison as a value is a branch, and a branch
 * per rule makes the verifier walk every combination (all the values are below 2^63). */
static __always_inline __u64 rolled(const struct kfault_sc_rule *rule, __u64 now)
{
	__u64 live = (now - rule->deadline_ns) >> 63;
	__u64 roll = ((__u64)bpf_get_prandom_u32() - rule->threshold) >> 63;

	asm volatile("" : "+r"(live), "+r"(roll));
	return live & roll;
}

/* Is `rule` live at all (a call it doesn't get is counted passed only then)? */
static __always_inline __u64 live(const struct kfault_sc_rule *rule, __u64 now)
{
	__u64 live = (now - rule->deadline_ns) >> 63;

	asm volatile("" : "+r"(live));
	return live;
}

/* Roll the fault rules of `targets` in slot order: the first that hits fails the call with its
 * errno; those rolled before it passed it. A slot of `fork_rules` is a rule on fork reached by a
 * clone that makes a process: counted under fork. */
static __always_inline int decide_fault(__u32 targets, __u64 nr, __u32 fork_rules)
{
	__u64 now = bpf_ktime_get_ns();

#pragma unroll 16
	for (int i = 0; i < KFAULT_SC_MAX_RULES; i++) {
		__u32 slot = i; /* the key's copy: i itself stays a constant of the unrolled code */

		if (!(targets >> i))
			break;
		if (!(targets & (1u << i)))
			continue;
		struct kfault_sc_rule *rule = kfault_sc_rules.lookup(&slot);
		/* fork's number for a rule on fork, else nr: without a branch (each would double
		 * the states the verifier walks) */
		__u64 on_fork = -(__u64)((fork_rules >> i) & 1);

		asm volatile("" : "+r"(on_fork));
		__u64 counted = nr ^ ((nr ^ KFAULT_NR_fork) & on_fork);

		if (!rule || rule->action != KFAULT_SC_ACT_FAULT || !live(rule, now))
			continue;
		if (rolled(rule, now)) {
			count(i, counted, KFAULT_SC_OUTCOME_FAILED, 0, 1);
			return -rule->error;
		}
		count(i, counted, KFAULT_SC_OUTCOME_PASSED, 0, 1);
	}
	return 0;
}

/* A fault hook's decision: 0 (the call goes on) or -errno. `makes_process`: task_alloc for a
 * new process (not a thread), which rules on fork fail whichever call made it.
 * Cheapest test first, for the task outside the targets: the rules on this hook (an array
 * load), then whether the task is in one's cgroup (a helper call each), and only then the
 * syscall it is in (three helper calls: its registers, read). */
static __always_inline int fault_at(__u32 hook, int makes_process)
{
	__u32 key = hook, *on_hook = kfault_sc_hook_rules.lookup(&key), named, fork_rules = 0, targets;
	__u64 nr;

	if (!on_hook || !*on_hook)
		return 0;
	targets = targeting_rules(*on_hook);
	if (!targets)
		return 0;
	nr = current_syscall();
	if (hook_of(nr) != hook)
		return 0;
	named = rules_naming(nr) & targets;
	if (makes_process)
		fork_rules = rules_naming(KFAULT_NR_fork) & targets & ~named;
	if (!(named | fork_rules))
		return 0;
	return decide_fault(named | fork_rules, nr, fork_rules);
}

struct socket;
struct sockaddr;
struct msghdr;
struct task_struct;
struct linux_binprm;
struct file;
struct vm_area_struct;
struct kernel_siginfo;
struct cred;
struct timespec64;
struct timezone;

LSM_PROBE(socket_create, int family, int type, int protocol, int kern)
{
	return kern ? 0 : fault_at(SC_HOOK_socket_create, 0);
}

LSM_PROBE(socket_connect, struct socket *sock, struct sockaddr *address, int addrlen)
{
	return fault_at(SC_HOOK_socket_connect, 0);
}

LSM_PROBE(socket_accept, struct socket *sock, struct socket *newsock)
{
	return fault_at(SC_HOOK_socket_accept, 0);
}

LSM_PROBE(socket_bind, struct socket *sock, struct sockaddr *address, int addrlen)
{
	return fault_at(SC_HOOK_socket_bind, 0);
}

LSM_PROBE(socket_listen, struct socket *sock, int backlog)
{
	return fault_at(SC_HOOK_socket_listen, 0);
}

LSM_PROBE(socket_sendmsg, struct socket *sock, struct msghdr *msg, int size)
{
	return fault_at(SC_HOOK_socket_sendmsg, 0);
}

LSM_PROBE(socket_recvmsg, struct socket *sock, struct msghdr *msg, int size, int flags)
{
	return fault_at(SC_HOOK_socket_recvmsg, 0);
}

LSM_PROBE(task_alloc, struct task_struct *task, unsigned long clone_flags)
{
	return fault_at(SC_HOOK_task_alloc, !(clone_flags & SC_CLONE_THREAD));
}

LSM_PROBE(bprm_creds_for_exec, struct linux_binprm *bprm)
{
	return fault_at(SC_HOOK_bprm_creds_for_exec, 0);
}

LSM_PROBE(mmap_file, struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags)
{
	return fault_at(SC_HOOK_mmap_file, 0);
}

LSM_PROBE(file_mprotect, struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot)
{
	return fault_at(SC_HOOK_file_mprotect, 0);
}

LSM_PROBE(task_kill, struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred)
{
	return fault_at(SC_HOOK_task_kill, 0);
}

LSM_PROBE(file_ioctl, struct file *file, unsigned int cmd, unsigned long arg)
{
	return fault_at(SC_HOOK_file_ioctl, 0);
}

LSM_PROBE(settime, const struct timespec64 *ts, const struct timezone *tz)
{
	return fault_at(SC_HOOK_settime, 0);
}

/* The slots of `targets` whose rule's holder can hold this process: all if the holder has a
 * signal for it, none if it can't hold it (0); if the holder doesn't know it yet (it joined the
 * cgroup after the holder looked), those whose holder runs to take it once it is stopped. */
static __always_inline __u32 holdable(__u32 targets, const __u32 *signo)
{
	__u32 found = 0;

	if (signo)
		return *signo ? targets : 0;
#pragma unroll 16
	for (int i = 0; i < KFAULT_SC_MAX_RULES; i++) {
		__u32 slot = i; /* the key's copy: i itself stays a constant of the unrolled code */

		if (!(targets >> i))
			break;
		__u32 *runs = kfault_sc_holders.lookup(&slot);

		if (runs)
			found |= (*runs & 1) << i;
	}
	return found & targets;
}

/* Have the holder stop this thread before it returns to user space: by its signal, or, for a
 * process the holder doesn't know yet, by SIGSTOP, recorded for the holder, which is woken. */
static __always_inline void signal_holder(__u32 tgid, const __u32 *signo)
{
	__u32 one = 1;

	if (signo) {
		bpf_send_signal_thread(*signo);
		return;
	}
	kfault_sc_stopped.update(&tgid, &one);
	kfault_sc_stop_bell.ringbuf_output(&tgid, sizeof(tgid), BPF_RB_FORCE_WAKEUP);
	bpf_send_signal_thread(SC_SIGSTOP);
}

int sc_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	const struct pt_regs *regs = (const struct pt_regs *)ctx->args[0];
	__u32 armed = armed_for(KFAULT_SC_ACT_LATENCY), targets, held, *signo;
	__u64 nr = -1, id, hold_ns = 0, now;

	if (!armed)
		return 0;
	bpf_probe_read_kernel(&nr, sizeof(nr), KFAULT_SYSCALL_NR(regs));
	targets = rules_naming(nr) & armed;
	if (!targets)
		return 0;
	targets = targeting_rules(targets);
	if (!targets)
		return 0;
	id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = id;
	signo = kfault_sc_traced.lookup(&tgid);
	held = holdable(targets, signo);
	now = bpf_ktime_get_ns();

	/* every latency rule that hits adds its delay; branches only where the paths meet again */
#pragma unroll 16
	for (int i = 0; i < KFAULT_SC_MAX_RULES; i++) {
		__u32 slot = i; /* the key's copy: i itself stays a constant of the unrolled code */

		if (!(targets >> i))
			break;
		if (!(targets & (1u << i)))
			continue;
		struct kfault_sc_rule *rule = kfault_sc_rules.lookup(&slot);

		if (!rule || rule->action != KFAULT_SC_ACT_LATENCY)
			continue;
		__u64 live_now = live(rule, now);
		__u64 hit = rolled(rule, now) & (held >> i) & 1;
		__u64 delay = rule->delay_ns & -hit;

		hold_ns += delay;
		/* DELAYED is PASSED + 2: a passed call of an expired rule adds 0 to PASSED */
		count(i, nr, KFAULT_SC_OUTCOME_PASSED + (hit << 1), delay, live_now);
	}
	if (!hold_ns)
		return 0;
	kfault_sc_holds.update(&tid, &hold_ns);
	signal_holder(tgid, signo);
	return 0;
}
