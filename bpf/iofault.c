/* iofault.c - file I/O faults at the syscall boundary, for processes in target cgroups.
 *
 *   io_sys_enter   raw tracepoint sys_enter   decide: is this call on a matching file, by a
 *                                             targeted thread, of a chosen method, and rolled?
 *   io_match_path  tail call of io_sys_enter  open, chdir: walk each candidate rule's path glob
 *   io_sys_exit    raw tracepoint sys_exit    remember which rules an opened fd matched, and
 *                                             which held call its hold interrupted
 *   io_apply_attr  tail call of io_sys_exit   attrOverride: rewrite the stat a call returns
 *   io_corrupt     tail call of either        mistake: wrong bytes in a read's result or a write's data
 *   io_aio_submit  tail call of io_sys_enter  libaio: decide one iocb of an io_submit per run
 *   io_uring_submit raw tracepoint            io_uring: decide each request once, as it is submitted
 *                  io_uring_submit_req         (with the file hooks, by its struct file, or marked
 *                                             for the hook of its first attempt)
 *   kretfunc____x64_sys_io_uring_enter        with the file hooks: the hold a request's decision
 *                  fexit                      owes its submitter, as io_uring_enter returns
 *   lsm__*         BPF LSM hooks              fail the decided call before it takes effect
 *   kmod_ret__*    fmod_ret on security_*     the same where BPF LSM is off but trampolines work
 *   kmod_ret__security_file_permission, with KFAULT_IO_FILE_HOOKS:
 *                  fmod_ret                   decide latency and fault on read and write at
 *                                             the file itself, by its path (bpf_d_path)
 *   kfunc__security_file_permission, with KFAULT_IO_FILE_HOOKS:
 *                  fentry                     the same for latency alone, while no fault rule
 *                                             needs the fmod_ret one: a cheaper trampoline
 *
 * With the file hooks (kernels with trampolines; struct file read at the offsets of the running
 * kernel's BTF) latency and fault on read and write need no syscall tracepoint: a file opened
 * before arming or by a relative path is matched by its own path, and every other task on the
 * node pays one array lookup per read or write while nothing is armed (and one cgroup check
 * per read or write of a regular file while a rule on that method is armed). The syscall
 * tracepoints then serve what needs the syscall's arguments or result: the other methods
 * (open must be decided before an O_CREAT open creates the file), attrOverride and mistake.
 *
 * Paths are matched once, when a file is opened, by walking the rule's glob compiled to a
 * DFA by the agent; a read or write then costs one hash lookup. Latency can't sleep in BPF:
 * the program records the delay and signals the thread, and the agent's holder (a ptrace
 * tracer) keeps the thread in its signal-delivery stop for the delay and swallows the signal.
 * The agent attaches the tracepoints only while a rule they decide is armed: syscall
 * tracepoints put every task on the node on the slower syscall path.
 *
 * attrOverride and mistake write into the caller's memory with bpf_probe_write_user: the
 * kernel logs "... is installing a program with bpf_probe_write_user helper that may corrupt
 * user memory!" when they load (expected, not an error), and refuses them under lockdown; they
 * are separate programs so that the loader can leave them out then and keep the rest.
 *
 * Syscall numbers and argument registers are the architecture's (syscalls.h): x86_64 only.
 * Every type read here is UAPI or kfault's own, and kernel structs are read at offsets from the
 * running kernel's BTF: the compiled program is the same whichever kernel's headers bcc is given
 * (the image's or the node's).
 *
 * Relative paths are walked from the state of their directory (kfault_io_dirs): the working
 * directory and the open directories, marked by the agent at arming from /proc and followed
 * here after it: chdir and an open walk the path as a directory too, fchdir takes the fd's
 * states, and a path these can't walk (one with "..", or from a directory never marked) asks
 * the agent to mark the process again (kfault_io_lost).
 *
 * What each concern does is in lib/: the glob walk (dfa.h), attrOverride (stat.h), mistake
 * (mistake.h), the syscall's arguments (syscall_args.h), a fault on fsync, given after the
 * call by the holder (after_call.h). Every map call is in this file: bcc rewrites
 * `map.lookup()` and its kind only in the file it compiles (tests/test_layout.py).
 */
#include <linux/types.h>
#include <linux/errno.h>
#include <linux/ptrace.h>
#include <linux/stat.h> /* struct statx (UAPI) */
#include <asm/stat.h>   /* struct stat of the 64-bit ABI (UAPI) */

#include "kfault.h"
#include "lib/after_call.h"
#include "lib/async_io.h"
#include "lib/dfa.h"
#include "lib/mistake.h"
#include "lib/scratch.h"
#include "lib/stat.h"
#include "lib/syscall_args.h"
#include "syscalls.h"

#define IO_SIGSTOP 19 /* x86_64's, like syscalls.h: stops any process; it can't catch it */
#define IO_EINTR 4
#define IO_ERESTARTSYS 512 /* to IO_ERESTART_RESTARTBLOCK: the kernel's own (linux/errno.h) */
#define IO_ERESTART_RESTARTBLOCK 516

/* slot -> rule. Written by the agent (whole value), read here. */
BPF_ARRAY(kfault_io_rules, struct kfault_io_rule, KFAULT_IO_MAX_RULES);
/* Slot i: the target cgroup (v2) of rule i; bpf_current_task_under_cgroup covers its subtree. */
BPF_CGROUP_ARRAY(kfault_io_cgroups, KFAULT_IO_MAX_RULES);
/* Mask of the rule slots in use: one lookup tells an untargeted node there is nothing to do. */
BPF_ARRAY(kfault_io_armed, __u32, 1);
/* KFAULT_IO_METHOD_* -> mask of the armed slots whose rule acts on that method (attrOverride:
 * GETATTR), written by the agent: a call of a method no rule names costs one array load and no
 * cgroup check (the stat family, reads and writes are the hottest of these calls). Opens are
 * looked at for every armed rule, since an open marks the fd for the rule's other methods.
 * Always within kfault_io_armed (the agent sets a slot's bits here after its armed bit and
 * clears them before it), so the file hooks read this mask alone. */
BPF_ARRAY(kfault_io_method_armed, __u32, KFAULT_IO_METHOD_SLOTS);
/* (tgid, fd) -> mask of the rules whose glob the file matched: written here at an open's exit
 * (and a dup's) and by the agent for files open before a rule was armed; read here. */
BPF_TABLE("lru_hash", struct kfault_io_fd_key, __u32, kfault_io_fds, KFAULT_IO_MAX_FDS);
/* pid_tgid -> the call a targeted thread is in: written at sys_enter, read by the LSM hooks and at sys_exit. */
BPF_TABLE("lru_hash", __u64, struct kfault_io_call, kfault_io_calls, KFAULT_IO_MAX_CALLS);
/* pid_tgid -> 1 + the syscall whose hold interrupted it (io_sys_exit): its retry is not decided. */
BPF_TABLE("lru_hash", __u64, __u32, kfault_io_interrupted, KFAULT_IO_MAX_CALLS);
/* tgid -> the signal the holder asked for (one the process doesn't block: holder.py), or 0:
 * the holder can't hold it (no such signal, or traced by another tracer), so it gets none. */
BPF_HASH(kfault_io_traced, __u32, __u32, KFAULT_IO_MAX_TRACED);
/* tgid -> 1: a targeted process the holder did not know yet (it joined the cgroup), stopped
 * here with SIGSTOP at its first delayed call; written here, taken by the holder, which seizes
 * it, ends the stop and holds the call. */
BPF_HASH(kfault_io_stopped, __u32, __u32, KFAULT_IO_MAX_TRACED);
/* Rung after each entry in kfault_io_stopped: the holders sleep on it (poll) rather than
 * polling that map, so an idle holder costs nothing and a stopped process is taken at once.
 * What it carries (the tgid) is not read: a holder that wakes empties it (holder.py). */
BPF_RINGBUF_OUTPUT(kfault_io_stop_bell, 1);
/* Slot i: 1 while the holder of latency rule i runs and takes what is stopped for it. Its
 * holder clears it first thing on its way out (also when the agent dies): a process stopped
 * after that would stay stopped, so from then on unknown processes just pass. */
BPF_ARRAY(kfault_io_holders, __u32, KFAULT_IO_MAX_RULES);
/* tid -> nanoseconds to hold it: written here before the signal, read by the holder. */
BPF_HASH(kfault_io_holds, __u32, __u64, KFAULT_IO_MAX_HOLDS);
/* (tgid, dirfd or KFAULT_IO_AT_FDCWD) -> each rule's DFA state after that directory: written by
 * the agent at arming and here after (chdir, fchdir, opens), read here to match relative paths.
 * LRU: a process that exits leaves its entries; one pushed out is lost, and then marked again. */
BPF_TABLE("lru_hash", struct kfault_io_fd_key, struct kfault_io_dir_states, kfault_io_dirs, KFAULT_IO_MAX_DIRS);
/* pid_tgid -> the states a chdir or an open gives its directory if it succeeds: written at its
 * entry, taken at its exit (they don't fit in kfault_io_calls' value). */
BPF_TABLE("lru_hash", __u64, struct kfault_io_dir_states, kfault_io_new_dirs, KFAULT_IO_MAX_CALLS);
/* tgid -> 1: a targeted process whose directories can't be followed here (a chdir through "..",
 * a relative path from a directory never marked): the agent marks it again from /proc and takes
 * the entry; the bell wakes it (what the ring carries is not read, as kfault_io_stop_bell's). */
BPF_TABLE("lru_hash", __u32, __u32, kfault_io_lost, KFAULT_IO_MAX_TRACED);
BPF_RINGBUF_OUTPUT(kfault_io_lost_bell, 1);
#ifdef KFAULT_IO_FILE_HOOKS
/* struct file * -> the armed rules whose glob its path matched. Walked once per file and
 * generation by the file hooks (at a read or write, and at a targeted task's open for
 * io_uring_submit, which can't walk a path); a struct file freed and reused for another path
 * is told apart by its f_path. */
struct io_file_match {
	__u64 dentry;
	__u64 mnt;
	__u32 generation;
	__u32 matched;
};
BPF_TABLE("lru_hash", __u64, struct io_file_match, kfault_io_files, KFAULT_IO_MAX_FDS);
/* Bumped by the agent each time it arms a rule: every file is walked again for it. */
BPF_ARRAY(kfault_io_generation, __u32, 1);

#endif
/* slot -> per-CPU counters. Written here, read by the agent at scrape time. */
BPF_PERCPU_ARRAY(kfault_io_counters, struct kfault_io_counters, KFAULT_IO_MAX_RULES);

/* KFAULT_IO_PROG_*, filled by the loader. io_match_path walks one rule's glob per run and
 * tail-calls itself for the next: each run is verified alone, where walking all rules in one
 * program is too many branches. io_apply_attr and io_corrupt may be missing (lockdown refuses
 * bpf_probe_write_user): a tail call to them then does nothing. */
BPF_PROG_ARRAY(kfault_io_programs, KFAULT_IO_PROG_COUNT);

/* The rules of `candidates` whose target cgroup (or a cgroup below it) holds the current task.
 * Each bit is set without a branch on the helper's answer (1 under, 0 not, < 0 no cgroup):
 * a branch per rule would make the verifier walk every combination of bits, and with one per
 * candidate only, a task no rule targets pays one helper call per rule armed for the method. */
static __always_inline __u32 targeting_rules(__u32 candidates)
{
	__u32 found = 0;

	/* a count, not plain `unroll`: with the early exit below, clang leaves the plain form a
	 * loop of variable shifts */
#pragma unroll 16
	for (int i = 0; i < KFAULT_IO_MAX_RULES; i++) {
		/* no candidate at i or above: stop. Every read of a regular file by every task on
		 * the node comes here while a read rule is armed; rules take the lowest free slots,
		 * so this is a few instructions, not a test of all sixteen bits. */
		if (!(candidates >> i))
			break;
		if (candidates & (1u << i)) {
			/* not under: 1 - 1 = 0 or negative: the sign bit, inverted. The barrier keeps
			 * clang from turning it back into a comparison (a branch in BPF). */
			__u64 not_under = (__u64)(kfault_io_cgroups.check_current_task(i) - 1) >> 63;

			asm volatile("" : "+r"(not_under));
			found |= (__u32)(not_under ^ 1) << i;
		}
	}
	return found;
}

/* The armed rules that act on `method`: every armed rule for an open (it marks the fd). */
static __always_inline __u32 rules_for(__u32 method, __u32 armed)
{
	__u32 index = method & (KFAULT_IO_METHOD_SLOTS - 1), *mask;

	if (method == KFAULT_IO_METHOD_OPEN || method == NO_METHOD)
		return armed;
	mask = kfault_io_method_armed.lookup(&index);
	return mask ? *mask & armed : 0;
}

/* Does rule r's glob accept scratch->path (lib/dfa.h)? For an open or a chdir, also note the
 * rule's state after the path as a directory in scratch->dir. */
static __always_inline int glob_accepts(__u32 r, struct io_scratch *scratch)
{
	__u32 rule = r & (KFAULT_IO_MAX_RULES - 1);
	const struct kfault_io_dfa *dfa = kfault_io_dfa.lookup(&rule);
	__u32 length = dfa_walk(dfa, r, scratch);

	if (scratch->dirs) {
		__u8 state = dfa_walked_dir(dfa, length, scratch);
		__u32 index = r;

		/* masked here, after the barrier: 6.1's verifier forgets the bounds of a masked
		 * index spilled across the walk's helper calls */
		asm volatile("" : "+r"(index));
		scratch->dir.state[index & (KFAULT_IO_MAX_RULES - 1)] = state;
	}
	return dfa_walked_accepts(dfa, scratch);
}

/* The agent marks this process again (kfault_io_lost): once rung, not again until it has. */
static __always_inline void ask_agent_to_mark(__u32 tgid)
{
	__u32 one = 1;

	if (kfault_io_lost.lookup(&tgid))
		return;
	kfault_io_lost.update(&tgid, &one);
	kfault_io_lost_bell.ringbuf_output(&tgid, sizeof(tgid), BPF_RB_FORCE_WAKEUP);
}

/* Does any rule reach below the directory walked (a state other than dead)? */
static __always_inline int dir_states_live(const struct kfault_io_dir_states *dir)
{
	int live = 0;

#pragma unroll
	for (int i = 0; i < KFAULT_IO_MAX_RULES; i++)
		live |= dir->state[i] != KFAULT_IO_DEAD_STATE;
	return live;
}

/* The same for the file hooks, without a branch (lib/dfa.h). */
static __always_inline int glob_accepts_padded(__u32 r, struct io_scratch *scratch)
{
	__u32 rule = r & (KFAULT_IO_MAX_RULES - 1);

	return dfa_accepts_padded(kfault_io_dfa.lookup(&rule), scratch);
}

/* 0 is expired too (kfault.h): a slot the agent has not written does nothing. */
static __always_inline int rule_expired(const struct kfault_io_rule *rule, __u64 now)
{
	return now >= rule->deadline_ns;
}

static __always_inline void count(__u32 slot, __u32 method, __u32 outcome, __u64 delay_ns)
{
	struct kfault_io_counters *counters = kfault_io_counters.lookup(&slot);
	__u32 index = method * KFAULT_IO_OUTCOME_STRIDE + outcome;

	/* The mask bounds the index for the verifier: clang, which may know it is within, must
	 * not drop it (6.1's verifier refused io_uring_submit's counts without it). */
	asm volatile("" : "+r"(index));
	index &= KFAULT_IO_METHOD_SLOTS * KFAULT_IO_OUTCOME_STRIDE - 1;

	if (!counters)
		return;
	counters->calls[index]++;
	counters->delay_ns += delay_ns;
}

/* Known to the holder: if it has a signal for it. Unknown (it joined the cgroup after the
 * holder looked): stopped in decide, so its first call is held too (no window), if a holder
 * runs to take it. */
static __always_inline int holdable(const __u32 *signo, __u32 slot)
{
	__u32 *runs;

	if (signo)
		return *signo != 0;
	runs = kfault_io_holders.lookup(&slot);
	return runs && *runs;
}

/* Have the holder stop this thread as its call returns to user space: by its signal, or, for a
 * process the holder doesn't know yet, by SIGSTOP, recorded for the holder, which is woken. */
static __always_inline void signal_holder(__u32 tgid, const __u32 *signo)
{
	__u32 one = 1;

	if (signo) {
		bpf_send_signal_thread(*signo);
		return;
	}
	kfault_io_stopped.update(&tgid, &one);
	kfault_io_stop_bell.ringbuf_output(&tgid, sizeof(tgid), BPF_RB_FORCE_WAKEUP);
	bpf_send_signal_thread(IO_SIGSTOP);
}

/* Which program decides a rule's calls of `method`: with the file hooks compiled in, they
 * decide latency and fault on read and write; the syscall tracepoints the rest. */
static __always_inline int decided_at_file_hook(__u32 action, __u32 method)
{
#ifdef KFAULT_IO_FILE_HOOKS
	return (action == KFAULT_IO_ACT_FAULT || action == KFAULT_IO_ACT_LATENCY) &&
	       (method == KFAULT_IO_METHOD_READ || method == KFAULT_IO_METHOD_WRITE);
#else
	return 0;
#endif
}

/* Actions a call can be given where it is decided (bits 1 << KFAULT_IO_ACT_*): a plain
 * syscall gets all; an asynchronous request only what reaches it there (docs/design/file-io.md). */
#define REACH_ALL 0xffffffffu
#define REACH_LATENCY (1u << KFAULT_IO_ACT_LATENCY)

/* Roll every rule in `mask` that covers `method` and is decided here (at_file_hook): the first fault's errno goes in
 * call->error for the LSM hooks, or for fsync, which no hook can fail, the first fault's rule
 * in call->fail_slot for io_sys_exit (given and counted as the call returns); latency is
 * summed into kfault_io_holds and the thread gets the holder's signal; the first attrOverride
 * or mistake goes in call->apply (counted where it is written: a call that fails gets nothing
 * written). A rule whose action is not in `reach` is counted as out of reach: latency as
 * `latency_miss`, the others as `other_miss`. With `at_uring_return` (an io_uring request, at
 * its submission) the holder's signal is owed until io_uring_enter returns (give_owed_hold):
 * pending in the submitter while it still submits, it makes io-wq's creation of a worker (a
 * fork from the submitter) fail, and 6.1 cancels the request (docs/design/file-io.md). */
static __always_inline void decide(__u32 mask, __u32 method, struct kfault_io_call *call, struct io_scratch *scratch,
				   int at_file_hook, __u32 reach, __u32 latency_miss, __u32 other_miss,
				   int at_uring_return)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns();
	__u32 tgid = id >> 32, tid = (__u32)id;
	__u32 *signo = kfault_io_traced.lookup(&tgid);

	/* an open that may create is a create too, counted as one for a rule on creates only */
	__u32 methods = 1u << method;

	if (method == KFAULT_IO_METHOD_OPEN && !at_file_hook && scratch->creates)
		methods |= 1u << KFAULT_IO_METHOD_CREATE;
	scratch->error = 0;
	scratch->hold_ns = 0;
	scratch->apply = 0;
	scratch->fail_slot = 0;
#pragma unroll
	for (__u32 i = 0; i < KFAULT_IO_MAX_RULES; i++) {
		__u32 slot = i, counted;
		struct kfault_io_rule *rule;

		if (!(mask & (1u << i)))
			continue;
		rule = kfault_io_rules.lookup(&slot);
		if (!rule || !(rule->methods & methods) || rule_expired(rule, now) ||
		    decided_at_file_hook(rule->action, method) != at_file_hook)
			continue;
		/* method if the rule names it, else CREATE; without a branch, which the unrolled loop
		 * would multiply (the barrier keeps clang from making it one) */
		counted = (rule->methods >> method) & 1;
		asm volatile("" : "+r"(counted));
		counted = KFAULT_IO_METHOD_CREATE ^ ((KFAULT_IO_METHOD_CREATE ^ method) & -counted);
		if (rule->threshold != KFAULT_ALWAYS && bpf_get_prandom_u32() >= rule->threshold) {
			count(slot, counted, KFAULT_IO_OUTCOME_PASSED, 0);
		} else if (!((reach >> rule->action) & 1)) {
			count(slot, counted, rule->action == KFAULT_IO_ACT_LATENCY ? latency_miss : other_miss, 0);
		} else if (rule->action == KFAULT_IO_ACT_FAULT) {
			if (fails_after_call(method) && !scratch->fail_slot) {
				/* given, if the holder can, and counted by io_sys_exit as the call returns */
				scratch->fail_slot = slot + 1;
				continue;
			}
			if (!fails_after_call(method) && !scratch->error)
				scratch->error = -(__s32)rule->error;
			count(slot, counted, KFAULT_IO_OUTCOME_FAILED,
			      0); /* a second fault on fsync: the first's errno */
		} else if (rule->action == KFAULT_IO_ACT_LATENCY && holdable(signo, slot)) {
			scratch->hold_ns += rule->delay_ns;
			count(slot, counted, KFAULT_IO_OUTCOME_DELAYED, rule->delay_ns);
		} else if ((rule->action == KFAULT_IO_ACT_ATTR || rule->action == KFAULT_IO_ACT_MISTAKE) &&
			   !scratch->apply) {
			scratch->apply = slot + 1;
		} else {
			count(slot, counted, KFAULT_IO_OUTCOME_PASSED, 0); /* what the holder can't give */
		}
	}
	call->error = scratch->error;
	call->apply = scratch->apply;
	call->fail_slot = scratch->fail_slot;
	if (scratch->hold_ns) {
		__u64 hold = scratch->hold_ns;

		kfault_io_holds.update(&tid, &hold);
		if (at_uring_return) {
			struct kfault_io_call owed = {.method = NO_METHOD, .hold_owed = 1};

			kfault_io_calls.update(&id, &owed);
		} else {
			signal_holder(tgid, signo);
		}
	}
}

/* Where each rule's walk of scratch->path starts: state 0 for an absolute path; for a relative
 * one, the state after its directory (the working directory, or openat's dirfd), with any
 * leading "./" dropped from the path. 1; 0 when the path can't be read; -1 when the directory is
 * unknown: the path matches no rule. */
static __always_inline int set_walk_start(__u32 tgid, __s32 dirfd, const char *user_path, struct io_scratch *scratch)
{
	struct kfault_io_fd_key key = {.tgid = tgid, .fd = dirfd};
	struct kfault_io_dir_states *dir;
	__u32 skip = 0;

	if (scratch->path[0] == '/') {
		__builtin_memset(&scratch->start, 0, sizeof(scratch->start));
		return 1;
	}
	dir = kfault_io_dirs.lookup(&key);
	if (!dir)
		return -1;
	scratch->start = *dir;
#pragma unroll
	for (int i = 0; i < 4; i++) { /* "./", "././", ...: the same directory */
		if (scratch->path[skip & 7] == '.' && scratch->path[(skip + 1) & 7] == '/')
			skip += 2;
	}
	if (skip && bpf_probe_read_user_str(scratch->path, KFAULT_IO_PATH_MAX, user_path + skip) < 0)
		return 0;
	return 1;
}

/* A copy of a marked fd (dup2(fd, 0), as dd and shells do) is marked like it: sys_exit marks
 * the new fd as it marks an opened one. dup2/dup3 close their target first: it loses its mark. */
static __always_inline void copy_marks(__u64 id, __u64 nr, const struct pt_regs *regs, __u32 *matched)
{
	struct kfault_io_call call = {.method = KFAULT_IO_METHOD_OPEN};

	if (nr == KFAULT_NR_fcntl) {
		__u64 cmd = syscall_arg(regs, 1);

		if (cmd != IO_F_DUPFD && cmd != IO_F_DUPFD_CLOEXEC)
			return;
	}
	if (nr == KFAULT_NR_dup2 || nr == KFAULT_NR_dup3) {
		struct kfault_io_fd_key target = {.tgid = id >> 32, .fd = syscall_arg(regs, 1)};

		kfault_io_fds.delete(&target);
	}
	if (!matched)
		return;
	call.opened_mask = *matched;
	kfault_io_calls.update(&id, &call);
}

/* Is this call the retry of one whose hold interrupted it? The signal that holds a thread is
 * pending while its call runs: a call that waits interruptibly returns EINTR or is restarted,
 * and a program that retries on EINTR (Python always does) would be held, and interrupted,
 * again and again, for ever. Its retry is let through once. */
static __always_inline int retry_of_interrupted(__u64 id, __u64 nr)
{
	__u32 *interrupted = kfault_io_interrupted.lookup(&id);
	__u32 held_nr;

	if (!interrupted)
		return 0;
	held_nr = *interrupted;
	kfault_io_interrupted.delete(&id);
	return held_nr == nr + 1;
}

/* What the exit of an open or a chdir does to kfault_io_dirs (KFAULT_IO_DIRS_*): the states
 * after its path as a directory, kept for it in kfault_io_new_dirs; for an open, only where some
 * rule reaches below it (else nothing relative to it can match). A path with ".." can't be
 * walked: a chdir then loses the working directory, and the agent marks the process again. */
static __always_inline __u32 follow_dirs(__u64 id, struct io_scratch *scratch)
{
	__u32 how = scratch->dirs;

	if (!how || (how == KFAULT_IO_DIRS_FD && !dir_states_live(&scratch->dir)))
		return 0;
	if (has_dot_dot(scratch))
		return how | KFAULT_IO_DIRS_LOST;
	kfault_io_new_dirs.update(&id, &scratch->dir);
	return how;
}

/* Decide the call and remember what sys_exit and the LSM hooks need. A write's mistake is
 * made here, before the kernel copies the data: io_corrupt changes the caller's buffer
 * itself, so the caller sees the wrong bytes in its own memory too after the call. */
static __always_inline void finish_enter(struct bpf_raw_tracepoint_args *ctx, __u64 id, __u32 method, __u32 mask,
					 __u32 opened_mask, __u32 dirs, struct io_scratch *scratch)
{
	struct kfault_io_call call = {.method = method, .opened_mask = opened_mask, .dirs = dirs};
	__u64 nr = ctx->args[1];
	int corrupt_now = 0;

	if (mask && retry_of_interrupted(id, nr))
		mask = 0;
	if (mask) {
		decide(mask, method, &call, scratch, 0, REACH_ALL, 0, 0, 0);
		if (scratch->hold_ns)
			call.held_nr = nr + 1;
	}
	if (call.apply && method == KFAULT_IO_METHOD_WRITE) {
		corrupt_now = 1;
		call.apply = 0;
	}
	call.buffer = scratch->buffer;
	call.layout = scratch->layout;
	if (call.opened_mask || call.error || call.apply || call.held_nr || call.fail_slot || call.dirs)
		kfault_io_calls.update(&id, &call);
	if (corrupt_now)
		kfault_io_programs.call(ctx, KFAULT_IO_PROG_CORRUPT);
}

/* fchdir(fd): the working directory takes the fd's states; an fd never marked (or lost) loses
 * it, and the agent marks the process again. */
static __always_inline void fchdir_states(__u64 id, const struct kfault_io_fd_key *key)
{
	struct kfault_io_dir_states *dir = kfault_io_dirs.lookup(key);
	struct kfault_io_call call = {.method = NO_METHOD, .dirs = KFAULT_IO_DIRS_CWD};

	if (dir)
		kfault_io_new_dirs.update(&id, dir);
	else
		call.dirs |= KFAULT_IO_DIRS_LOST;
	kfault_io_calls.update(&id, &call);
}

/* At the exit of a chdir, fchdir or open that succeeded (`ret`: the fd an open returned): its
 * directory's states, as its entry noted them (follow_dirs, fchdir_states). */
static __always_inline void set_dir_states(__u64 id, __u32 how, long ret)
{
	struct kfault_io_fd_key key = {.tgid = id >> 32, .fd = KFAULT_IO_AT_FDCWD};
	struct kfault_io_dir_states *dir;

	if (how & KFAULT_IO_DIRS_FD)
		key.fd = ret;
	if (how & KFAULT_IO_DIRS_LOST) {
		kfault_io_dirs.delete(&key);
		ask_agent_to_mark(key.tgid);
		return;
	}
	dir = kfault_io_new_dirs.lookup(&id);
	if (!dir)
		return;
	kfault_io_dirs.update(&key, dir);
	kfault_io_new_dirs.delete(&id);
}

/* libaio's io_submit: its iocbs are decided one per run of io_aio_submit (here only where
 * they are, to keep every other syscall's path short). */
static __always_inline void start_aio_submit(struct bpf_raw_tracepoint_args *ctx, const struct pt_regs *regs)
{
	__u32 zero = 0;
	struct io_scratch *scratch = kfault_io_scratch.lookup(&zero);

	if (!scratch)
		return;
	scratch->iocbs = syscall_arg(regs, 2);
	scratch->iocb_count = syscall_arg(regs, 1);
	scratch->iocb_index = 0;
	kfault_io_programs.call(ctx, KFAULT_IO_PROG_AIO_SUBMIT);
}

int io_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	const struct pt_regs *regs = (const struct pt_regs *)ctx->args[0];
	__u64 nr = ctx->args[1];
	__u32 zero = 0, *armed, targets, method;
	struct io_scratch *scratch;
	__u64 id;

	armed = kfault_io_armed.lookup(&zero);
	if (!armed || !*armed)
		return 0;
	if (nr == KFAULT_NR_io_submit) {
		start_aio_submit(ctx, regs);
		return 0;
	}
	method = method_of(nr);
	if (method == NO_METHOD && nr != KFAULT_NR_close && !copies_fd(nr) && !changes_cwd(nr))
		return 0;
	if (nr == KFAULT_NR_unlinkat && (syscall_arg(regs, 2) & IO_AT_REMOVEDIR))
		method = KFAULT_IO_METHOD_RMDIR;
	targets = rules_for(method, *armed);
	if (!targets)
		return 0;
	targets = targeting_rules(targets);
	if (!targets)
		return 0;
	scratch = kfault_io_scratch.lookup(&zero);
	if (!scratch)
		return 0;

	id = bpf_get_current_pid_tgid();
	scratch->creates = method == KFAULT_IO_METHOD_OPEN && open_creates(nr, regs);
	note_buffer(nr, method, regs, scratch);
	scratch->dirs = 0;
	__s32 dirfd;
	int path_arg = path_argument(nr, regs, &dirfd);
	struct kfault_io_fd_key key = {.tgid = id >> 32, .fd = syscall_arg(regs, 0)};
	if (path_arg >= 0) {
		const char *user_path = (const char *)syscall_arg(regs, path_arg);

		scratch->path[0] = 0; /* utimensat(fd, NULL, ...), as futimens: the fd's file */
		/* < 0, not <= 0: for "" (glibc's fstat is fstatat(fd, "", AT_EMPTY_PATH)) 6.1's helper
		 * returns 0, where later kernels count the NUL and return 1 */
		if (user_path && bpf_probe_read_user_str(scratch->path, KFAULT_IO_PATH_MAX, user_path) < 0)
			return 0;
		if (scratch->path[0] || (method != KFAULT_IO_METHOD_GETATTR && method != KFAULT_IO_METHOD_SETATTR)) {
			int start = set_walk_start(id >> 32, dirfd, user_path, scratch);

			if (start < 0 && nr == KFAULT_NR_chdir) {
				/* asked at its exit: /proc shows the new directory only once it succeeded */
				struct kfault_io_call call = {.method = NO_METHOD,
							      .dirs = KFAULT_IO_DIRS_CWD | KFAULT_IO_DIRS_LOST};

				kfault_io_calls.update(&id, &call);
				return 0;
			}
			if (start <= 0) {
				if (start < 0)
					ask_agent_to_mark(id >> 32);
				return 0;
			}
			scratch->remaining = targets;
			scratch->found = 0;
			scratch->method = method;
			scratch->dirs = nr == KFAULT_NR_chdir           ? KFAULT_IO_DIRS_CWD :
					method == KFAULT_IO_METHOD_OPEN ? KFAULT_IO_DIRS_FD :
									  0;
			__builtin_memset(&scratch->dir, KFAULT_IO_DEAD_STATE, sizeof(scratch->dir));
			kfault_io_programs.call(ctx, KFAULT_IO_PROG_MATCH_PATH);
			return 0; /* not reached unless the walker is missing: then nothing is injected */
		}
		key.fd = dirfd; /* fstatat(fd, "", AT_EMPTY_PATH), as glibc's fstat does: the fd's file */
	}

	if (nr == KFAULT_NR_close) {
		kfault_io_fds.delete(&key);
		kfault_io_dirs.delete(&key);
		return 0;
	}
	if (nr == KFAULT_NR_fchdir) {
		fchdir_states(id, &key);
		return 0;
	}
	__u32 *matched = kfault_io_fds.lookup(&key);
	if (copies_fd(nr)) {
		copy_marks(id, nr, regs, matched);
		return 0;
	}
	if (matched && (*matched & targets))
		finish_enter(ctx, id, method, *matched & targets, 0, 0, scratch);
	return 0;
}

int io_match_path(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, r;
	__u64 id;
	struct io_scratch *scratch = kfault_io_scratch.lookup(&zero);

	if (!scratch || !scratch->remaining)
		return 0;
#pragma unroll
	for (int i = KFAULT_IO_MAX_RULES - 1; i >= 0; i--) { /* the lowest rule left */
		if (scratch->remaining & (1u << i))
			scratch->rule = i;
	}
	r = scratch->rule & (KFAULT_IO_MAX_RULES - 1);
	scratch->remaining &= ~(1u << r);
	if (glob_accepts(r, scratch))
		scratch->found |= 1u << r;
	if (scratch->remaining) {
		kfault_io_programs.call(ctx, KFAULT_IO_PROG_MATCH_PATH);
		return 0;
	}
	if (scratch->dirs == KFAULT_IO_DIRS_CWD) { /* a chdir: nothing to decide */
		struct kfault_io_call call = {.method = NO_METHOD};

		id = bpf_get_current_pid_tgid();
		call.dirs = follow_dirs(id, scratch);

		kfault_io_calls.update(&id, &call);
		return 0;
	}
	/* only an open marks the fd it returns; a stat has no fd to mark */
	id = bpf_get_current_pid_tgid();
	finish_enter(ctx, id, scratch->method, scratch->found,
		     scratch->method == KFAULT_IO_METHOD_OPEN ? scratch->found : 0, follow_dirs(id, scratch), scratch);
	return 0;
}

/* fault on fsync (lib/after_call.h): the call has run; record this return for the holder and
 * have it stop the thread (a held call's signal is pending already). Counted failed here, as
 * the fault is given; the holder counts what it could not give (kfault_io_missed). If the
 * holder dies before the stop, the kernel resumes the thread and the real result stands; the
 * pending signal's default action is to ignore it (holder.py's pick_hold_signal). */
static __always_inline void fail_after_call(struct bpf_raw_tracepoint_args *ctx, __u64 id,
					    const struct kfault_io_call *call)
{
	__u32 tgid = id >> 32, tid = (__u32)id, slot = (call->fail_slot - 1) & (KFAULT_IO_MAX_RULES - 1);
	__u32 *signo = kfault_io_traced.lookup(&tgid);
	struct kfault_io_rule *rule = kfault_io_rules.lookup(&slot);
	struct kfault_io_fail fail = {};

	if (!rule || rule_expired(rule, bpf_ktime_get_ns()) || rule->action != KFAULT_IO_ACT_FAULT)
		return; /* revoked while the call ran: its real result stands */
	if (!holdable(signo, slot)) {
		count(slot, call->method, KFAULT_IO_OUTCOME_PASSED, 0);
		return;
	}
	note_return(&fail, (const struct pt_regs *)ctx->args[0], slot, rule->error);
	kfault_io_fails.update(&tid, &fail);
	if (!call->held_nr)
		signal_holder(tgid, signo);
	count(slot, call->method, KFAULT_IO_OUTCOME_FAILED, 0);
}

/* One iocb of an io_submit: its file is matched by (process, fd), as a read's is. Latency
 * holds the caller at io_submit's return, once however many of its iocbs are chosen (each
 * request is delayed once: it completes no sooner for the caller than that). With the file
 * hooks, reads and writes are theirs: aio_read and aio_write pass rw_verify_area in the
 * caller. What the syscall tracepoints can't do to an iocb is counted as out of reach: an
 * errno (a refusal here would fail the whole io_submit), attrOverride and mistake. */
int io_aio_submit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, index, method, *matched, *armed;
	struct kfault_io_call call = {};
	struct io_scratch *scratch = kfault_io_scratch.lookup(&zero);
	__u64 iocb = 0, id = bpf_get_current_pid_tgid();
	__u16 command = NO_METHOD;
	__u32 fd = 0;

	armed = kfault_io_armed.lookup(&zero);
	if (!scratch || !armed || scratch->iocb_index >= scratch->iocb_count ||
	    scratch->iocb_index >= KFAULT_IO_AIO_MAX_IOCBS)
		return 0;
	if (!scratch->iocb_index) { /* the first run: which armed rules target the caller */
		scratch->aio_targets = targeting_rules(rules_for(KFAULT_IO_METHOD_READ, *armed) |
						       rules_for(KFAULT_IO_METHOD_WRITE, *armed) |
						       rules_for(KFAULT_IO_METHOD_FSYNC, *armed));
		if (!scratch->aio_targets)
			return 0;
	}
	index = scratch->iocb_index & (KFAULT_IO_AIO_MAX_IOCBS - 1);
	scratch->iocb_index = index + 1;
	bpf_probe_read_user(&iocb, sizeof(iocb), (void *)(scratch->iocbs + index * sizeof(__u64)));
	if (iocb &&
	    !bpf_probe_read_user(&command, sizeof(command),
				 (void *)(iocb + __builtin_offsetof(struct iocb, aio_lio_opcode))) &&
	    !bpf_probe_read_user(&fd, sizeof(fd), (void *)(iocb + __builtin_offsetof(struct iocb, aio_fildes)))) {
		struct kfault_io_fd_key key = {.tgid = id >> 32, .fd = fd};

		method = aio_method(command);
		matched = kfault_io_fds.lookup(&key);
		if (method != NO_METHOD && matched && (*matched & rules_for(method, *armed) & scratch->aio_targets))
			decide(*matched & rules_for(method, *armed) & scratch->aio_targets, method, &call, scratch, 0,
			       REACH_LATENCY, 0, KFAULT_IO_OUTCOME_UNREACHED_ASYNC, 0);
	}
	if (scratch->iocb_index < scratch->iocb_count)
		kfault_io_programs.call(ctx, KFAULT_IO_PROG_AIO_SUBMIT);
	return 0;
}

#if defined(KFAULT_IO_FILE_HOOKS) && defined(KFAULT_IO_URING)
/* The armed rules whose glob the file of fd matched, as the file hooks cached it for this
 * generation (walked at its open, or at a read or write since the last arming), else as the
 * agent marked the fd from /proc at arming (a file opened before, not read since): 1, or 0 if
 * neither knows (a path can't be walked here: bpf_d_path is the file hooks'). Regular files
 * only, as at the hooks. */
static __always_inline int submitted_file_rules(__u64 id, __s32 fd, __u32 *matched)
{
	__u64 file = fd_file(fd), key = file;
	__u32 zero = 0, *generation = kfault_io_generation.lookup(&zero), *marked;
	struct kfault_io_fd_key fd_key = {.tgid = id >> 32, .fd = fd};
	struct io_file_match *seen;
	__u16 mode = 0;

	if (!file || !generation)
		return 0;
	bpf_probe_read_kernel(&mode, sizeof(mode),
			      (void *)(kernel_u64(file, KFAULT_OFF_FILE_F_INODE) + KFAULT_OFF_INODE_I_MODE));
	if (!S_ISREG(mode))
		return 0;
	seen = kfault_io_files.lookup(&key);
	if (seen && seen->generation == *generation &&
	    seen->dentry == kernel_u64(file, KFAULT_OFF_FILE_F_PATH_DENTRY) &&
	    seen->mnt == kernel_u64(file, KFAULT_OFF_FILE_F_PATH_MNT)) {
		*matched = seen->matched;
		return 1;
	}
	marked = kfault_io_fds.lookup(&fd_key);
	if (!marked)
		return 0;
	*matched = *marked;
	return 1;
}

/* With the file hooks, an io_uring read or write is decided here, in its submitter, where its
 * file's match is known: latency holds the submitter at io_uring_enter's return, wherever the
 * request is issued (an io-wq worker can't be held); an errno is given by the file hook at its
 * first attempt, inline or in the worker (a worker's hook can fail it). One not known here
 * (or an SQPOLL ring's) is decided by the hook of its first attempt. Either way, once
 * (kfault_io_uring_pending). */
static __always_inline void decide_uring_file(__u64 req, __u64 id, __u32 method, __u32 targets, __u64 flags, __s32 fd,
					      struct io_scratch *scratch)
{
	struct kfault_io_call call = {};
	__u32 tid = (__u32)id, matched = 0;
	__s32 pending = IO_URING_UNDECIDED;

	if (!(flags & IO_IOSQE_FIXED_FILE) && !in_io_thread() && submitted_file_rules(id, fd, &matched)) {
		pending = 0;
		if (matched & targets) {
			decide(matched & targets, method, &call, scratch, 1, REACH_ALL, 0, 0, 1);
			pending = call.error;
		}
	}
	kfault_io_uring_pending.update(&req, &pending);
	kfault_io_uring_submitted.update(&tid, &req);
}
#endif

#ifdef KFAULT_IO_URING
/* io_uring: each request as it is submitted, in the thread that submits it (the caller of
 * io_uring_enter, or the SQPOLL thread), before its first issue. Latency holds the submitter
 * at io_uring_enter's return: each request once, wherever it is issued later (inline, from
 * task work, in an io-wq worker), as the holder can't hold io_uring's kernel threads. With the
 * file hooks, reads and writes are decided by their file (decide_uring_file); the rest by the
 * fd here. What can't be reached is counted so, by why. */
int io_uring_submit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 req = ctx->args[0], id, flags = 0;
	__u32 zero = 0, *armed, targets, method, *matched;
	__u8 opcode = 0;
	__s32 fd = -1;
	struct kfault_io_call call = {};
	struct io_scratch *scratch;

	armed = kfault_io_armed.lookup(&zero);
	if (!armed || !*armed)
		return 0;
	bpf_probe_read_kernel(&opcode, sizeof(opcode), (void *)(req + KFAULT_OFF_IO_KIOCB_OPCODE));
	method = uring_method(opcode);
	if (method == NO_METHOD)
		return 0;
	targets = rules_for(method, *armed);
	if (!targets)
		return 0;
	targets = targeting_rules(targets);
	scratch = kfault_io_scratch.lookup(&zero);
	if (!targets || !scratch)
		return 0;
	id = bpf_get_current_pid_tgid();
	bpf_probe_read_kernel(&flags, sizeof(flags), (void *)(req + KFAULT_OFF_IO_KIOCB_FLAGS));
	bpf_probe_read_kernel(&fd, sizeof(fd), (void *)(req + KFAULT_OFF_IO_KIOCB_CQE_FD));
#ifdef KFAULT_IO_FILE_HOOKS
	if (method == KFAULT_IO_METHOD_READ || method == KFAULT_IO_METHOD_WRITE)
		decide_uring_file(req, id, method, targets, flags, fd, scratch);
#endif
	if (method != KFAULT_IO_METHOD_READ && method != KFAULT_IO_METHOD_WRITE && method != KFAULT_IO_METHOD_FSYNC) {
		/* by path: no fd to match, so every rule on the method counts it */
		decide(targets, method, &call, scratch, 0, 0, KFAULT_IO_OUTCOME_UNREACHED_ASYNC,
		       KFAULT_IO_OUTCOME_UNREACHED_ASYNC, 0);
		return 0;
	}
	if (flags & IO_IOSQE_FIXED_FILE) {
		decide(targets, method, &call, scratch, 0, 0, KFAULT_IO_OUTCOME_UNREACHED_FIXED_FILE,
		       KFAULT_IO_OUTCOME_UNREACHED_FIXED_FILE, 0);
		return 0;
	}
	struct kfault_io_fd_key key = {.tgid = id >> 32, .fd = fd};
	matched = kfault_io_fds.lookup(&key);
	if (matched && (*matched & targets))
		decide(*matched & targets, method, &call, scratch, 0, in_io_thread() ? 0 : REACH_LATENCY,
		       KFAULT_IO_OUTCOME_UNREACHED_IO_THREAD, KFAULT_IO_OUTCOME_UNREACHED_ASYNC, 1);
	return 0;
}
#endif

/* The hold decide() owed an io_uring submitter (at_uring_return), given as io_uring_enter
 * returns: its signal now, which the thread takes on its way to user space. */
static __always_inline void give_owed_hold(__u64 id)
{
	__u32 tgid = id >> 32;

	signal_holder(tgid, kfault_io_traced.lookup(&tgid));
}

int io_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct kfault_io_call *call = kfault_io_calls.lookup(&id);
	long ret = ctx->args[1];

	if (!call)
		return 0;
#ifndef KFAULT_IO_FILE_HOOKS /* with them, fexit on io_uring_enter gives it, first */
	if (call->hold_owed)
		give_owed_hold(id);
#endif
	if (call->held_nr && (ret == -IO_EINTR || (ret <= -IO_ERESTARTSYS && ret >= -IO_ERESTART_RESTARTBLOCK))) {
		__u32 held_nr = call->held_nr;

		kfault_io_interrupted.update(&id, &held_nr);
	}
	if (call->fail_slot) {
		fail_after_call(ctx, id, call);
	} else if (call->held_nr) {
		__u32 tid = id;

		kfault_io_fails.delete(&tid); /* one whose stop never came: not this call's */
	}
	if (call->method == KFAULT_IO_METHOD_OPEN && call->opened_mask && ret >= 0) {
		struct kfault_io_fd_key key = {.tgid = id >> 32, .fd = ret};

		kfault_io_fds.update(&key, &call->opened_mask);
	}
	if (call->dirs && ret >= 0)
		set_dir_states(id, call->dirs, ret);
	__u32 zero = 0, apply = call->apply, method = call->method, layout = call->layout;
	__u64 buffer = call->buffer;
	kfault_io_calls.delete(&id);
	if (!apply)
		return 0;
	struct io_scratch *scratch = kfault_io_scratch.lookup(&zero);
	if (!scratch)
		return 0;
	scratch->apply = apply;
	scratch->method = method;
	scratch->layout = layout;
	scratch->buffer = buffer;
	scratch->length = ret > 0 ? ret : 0;
	if (method == KFAULT_IO_METHOD_GETATTR && ret == 0)
		kfault_io_programs.call(ctx, KFAULT_IO_PROG_APPLY_ATTR);
	else if (method == KFAULT_IO_METHOD_READ && ret > 0)
		kfault_io_programs.call(ctx, KFAULT_IO_PROG_CORRUPT);
	return 0;
}

/* The rule io_sys_exit or finish_enter chose for this call, from scratch->apply. */
static __always_inline struct kfault_io_rule *applied_rule(struct io_scratch *scratch, __u32 *slot)
{
	if (!scratch->apply)
		return 0;
	*slot = (scratch->apply - 1) & (KFAULT_IO_MAX_RULES - 1);
	return kfault_io_rules.lookup(slot);
}

/* attrOverride, at the exit of a stat that succeeded: the fields the rule names, written over
 * what the kernel just copied to the caller. */
int io_apply_attr(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, slot = 0;
	struct io_scratch *scratch = kfault_io_scratch.lookup(&zero);
	struct kfault_io_rule *rule;

	if (!scratch)
		return 0;
	rule = applied_rule(scratch, &slot);
	if (!rule || rule->action != KFAULT_IO_ACT_ATTR)
		return 0;
	if (scratch->layout == KFAULT_IO_LAYOUT_STATX)
		override_statx(rule, scratch->buffer);
	else if (scratch->layout == KFAULT_IO_LAYOUT_STAT)
		override_stat(rule, scratch->buffer);
	else
		return 0;
	count(slot, KFAULT_IO_METHOD_GETATTR, KFAULT_IO_OUTCOME_OVERRIDDEN, 0);
	return 0;
}

/* mistake, at a read's exit or a write's entry (lib/mistake.h). */
int io_corrupt(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, slot = 0;
	struct io_scratch *scratch = kfault_io_scratch.lookup(&zero);
	struct kfault_io_rule *rule;

	if (!scratch)
		return 0;
	rule = applied_rule(scratch, &slot);
	if (!rule || rule->action != KFAULT_IO_ACT_MISTAKE)
		return 0;
	if (!write_mistake(rule, scratch))
		return 0;
	count(slot, scratch->method, KFAULT_IO_OUTCOME_CORRUPTED, 0);
	return 0;
}

/* The error decided for the current thread's syscall, or 0. The armed mask first: an array
 * load, where the call lookup is a hash's (these hooks run for every task on the node). */
static __always_inline int decided_error(void)
{
	__u32 zero = 0, *armed = kfault_io_armed.lookup(&zero);
	struct kfault_io_call *call;
	__u64 id;

	if (!armed || !*armed)
		return 0;
	id = bpf_get_current_pid_tgid();
	call = kfault_io_calls.lookup(&id);
	return call ? call->error : 0;
}

#ifdef KFAULT_IO_FILE_HOOKS
/* No member of struct file or struct inode is read by name: bcc's own includes declare them as
 * the headers it is given lay them out, which need not be the running kernel's. Where each field
 * is in the running kernel comes from its BTF (kernel/btf.py), as the KFAULT_OFF_* flags the
 * loader passes (its table: loader.FILE_HOOK_LAYOUT). The verifier knows the BTF type of the
 * hook's argument and checks each load at an offset as it checks `file->f_mode`
 * (btf_struct_access walks the kernel's own struct to the member there), and bpf_d_path takes
 * `file + offset of f_path` as a struct path (btf_struct_ids_match walks to it). */
struct file;
struct inode;
struct path;

#define IO_FIELD(type, object, offset) (*(type *)((char *)(object) + (offset)))

/* Constants of include/linux/fs.h, which BTF doesn't carry (#defines, not enums). FMODE_NOACCOUNT
 * is 0x20000000 from its introduction for overlayfs (4.19) to today's fs.h, which writes it
 * (1 << 29); the files overlayfs opens behind the one a process reads have it in every version
 * (open_with_fake_path, then 6.5's backing files, FMODE_BACKING | FMODE_NOACCOUNT). MAY_READ and
 * MAY_WRITE are the r and w bits of a mode (4, 2), as generic_permission compares them with
 * i_mode: unchanged since 2.6. (S_ISDIR and S_ISREG are stat(2)'s, UAPI: linux/stat.h.) */
#define IO_FMODE_NOACCOUNT (1u << 29)
#define IO_MAY_WRITE 2
#define IO_MAY_READ 4

static __always_inline struct path *io_file_path(struct file *file)
{
	return (struct path *)((char *)file + KFAULT_OFF_FILE_F_PATH);
}

static __always_inline __u64 io_file_dentry(struct file *file)
{
	return (__u64)IO_FIELD(void *, file, KFAULT_OFF_FILE_F_PATH_DENTRY);
}

static __always_inline __u64 io_file_mnt(struct file *file)
{
	return (__u64)IO_FIELD(void *, file, KFAULT_OFF_FILE_F_PATH_MNT);
}

static __always_inline __u32 io_file_mode(struct file *file)
{
	return IO_FIELD(__u32, file, KFAULT_OFF_FILE_F_MODE);
}

static __always_inline __u16 io_file_inode_mode(struct file *file)
{
	struct inode *inode = IO_FIELD(struct inode *, file, KFAULT_OFF_FILE_F_INODE);

	return IO_FIELD(__u16, inode, KFAULT_OFF_INODE_I_MODE);
}

/* Which program on security_file_permission decides reads and writes (KFAULT_IO_FILE_DECIDER_*):
 * written by the agent as it moves the decision between the fentry one (latency alone, the
 * cheaper trampoline) and the fmod_ret one (a fault rule needs it), after attaching the new one
 * and before detaching the old, so that while both are attached a call is decided once. */
BPF_ARRAY(kfault_io_file_decider, __u32, 1);

/* The armed rules whose glob accepts the file's path as its process sees it (bpf_d_path:
 * absolute, from the process's root), from the cache or walked now. */
static __always_inline __u32 file_matches(struct file *file, __u32 armed)
{
	__u64 key = (__u64)file, dentry = io_file_dentry(file), mnt = io_file_mnt(file);
	__u32 zero = 0, *generation = kfault_io_generation.lookup(&zero);
	struct io_file_match *seen = kfault_io_files.lookup(&key);
	struct io_file_match walked = {.dentry = dentry, .mnt = mnt};
	struct io_scratch *scratch;

	if (!generation)
		return 0;
	if (seen && seen->dentry == dentry && seen->mnt == mnt && seen->generation == *generation)
		return seen->matched;
	walked.generation = *generation;
	scratch = kfault_io_scratch.lookup(&zero); /* only here: a per-CPU lookup is a helper call */
	if (!scratch)
		return 0;
	if (bpf_d_path(io_file_path(file), scratch->path, KFAULT_IO_PATH_MAX) > 0) {
		scratch->found = 0;
#pragma unroll
		for (__u32 r = 0; r < KFAULT_IO_MAX_RULES; r++) {
			if ((armed & (1u << r)) && glob_accepts_padded(r, scratch))
				scratch->found |= 1u << r;
		}
		walked.matched = scratch->found;
	}
	kfault_io_files.update(&key, &walked);
	return walked.matched;
}

/* What the file hook may do to this read or write: everything to a plain syscall's (and
 * libaio's, whose iocbs pass here in io_submit); to an io_uring request's, only at its first
 * attempt, and only if io_uring_submit left it undecided (kfault_io_uring_pending); nothing at a
 * later attempt (a retry from task work, or in an io-wq worker after a punt): a request is
 * decided once. A request decided at its submission gets here the errno decided there
 * (*error), at its first attempt. A first attempt in an io_uring kernel thread (an io-wq
 * worker, an SQPOLL thread) of a request left undecided can't be held: its latency is counted
 * as out of reach. A retry from task work run at the return of another syscall than
 * io_uring_enter is taken for a plain call (docs/design/file-io.md). */
static __always_inline __u32 io_uring_attempt_reach(__s32 *error)
{
#ifdef KFAULT_IO_URING
	__u64 req = 0, *submitted;
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), worker = in_io_thread();
	__s32 *pending, decided;

	if (worker)
		req = worker_request();
	else if (current_syscall() != KFAULT_NR_io_uring_enter)
		return REACH_ALL;
	if (!req) { /* inline, from task work, or an SQPOLL thread: the request it submitted last */
		submitted = kfault_io_uring_submitted.lookup(&tid);
		req = submitted ? *submitted : 0;
	}
	pending = req ? kfault_io_uring_pending.lookup(&req) : 0;
	if (!pending)
		return 0;
	decided = *pending;
	kfault_io_uring_pending.delete(&req);
	if (decided != IO_URING_UNDECIDED) {
		*error = decided;
		return 0;
	}
	return worker ? REACH_ALL & ~REACH_LATENCY : REACH_ALL;
#else
	return REACH_ALL;
#endif
}

/* Decide a call on `file` by a task of a target, if `decider` (KFAULT_IO_FILE_DECIDER_*) is the
 * program that decides them now: its errno, or 0 (latency is the holder's). */
static __always_inline int decide_at_file(struct file *file, __u32 method, __u32 decider)
{
	/* One array load, then one cgroup check per rule on this method: all that a read or a
	 * write of a task no rule targets pays, on every node where a rule is armed. */
	__u32 zero = 0, index = method, *rules = kfault_io_method_armed.lookup(&index), *armed, targets;
	struct kfault_io_call call = {.method = method};
	struct io_scratch *scratch;
	__u32 reach, *decider_now;
	__s32 error = 0;

	if (!rules || !*rules)
		return 0;
	targets = *rules;
	/* A file the kernel opened for itself behind the one the process reads: overlayfs (every
	 * container's root filesystem) reads its upper or lower file through another permission
	 * check, and that file shows the overlay's path: it would be decided twice. */
	if (io_file_mode(file) & IO_FMODE_NOACCOUNT)
		return 0;
	targets = targeting_rules(targets);
	if (!targets)
		return 0;
	armed = kfault_io_armed.lookup(&zero);
	if (!armed)
		return 0;
	targets &= file_matches(file, *armed); /* all armed rules: the match is cached for each */
	if (!targets)
		return 0;
	decider_now = kfault_io_file_decider.lookup(&zero);
	if (!decider_now || *decider_now != decider)
		return 0;
	scratch = kfault_io_scratch.lookup(&zero);
	if (!scratch)
		return 0;
	reach = io_uring_attempt_reach(&error);
	if (!reach)
		return error;
	decide(targets, method, &call, scratch, 1, reach, KFAULT_IO_OUTCOME_UNREACHED_IO_THREAD, 0, 0);
	return call.error;
}

/* A read or a write of a regular file, decided by `decider`: its errno, or 0. Regular files
 * only: a FIFO's or a device's read waits interruptibly, so a hold's signal would interrupt
 * it, and with no syscall exit here to see that, its retry would be held again
 * (retry_of_interrupted). Chaos Mesh's FUSE never serves them either. */
static __always_inline int decide_read_write(struct file *file, int mask, __u16 mode, __u32 decider)
{
	if (!S_ISREG(mode))
		return 0;
	if (mask & IO_MAY_WRITE)
		return decide_at_file(file, KFAULT_IO_METHOD_WRITE, decider);
	if (mask & IO_MAY_READ)
		return decide_at_file(file, KFAULT_IO_METHOD_READ, decider);
	return 0;
}

/* Every read and write (plain, positional, vector, splice, sendfile, copy_file_range) before
 * any byte moves: rw_verify_area asks with MAY_READ or MAY_WRITE. Attached while a fault rule
 * needs it (it fails the call with the decided errno). */
KMOD_RET(security_file_permission, struct file *file, int mask, int ret)
{
	__u16 mode = io_file_inode_mode(file);

	if (S_ISDIR(mode))
		return decided_error(); /* a readdir */
	return decide_read_write(file, mask, mode, KFAULT_IO_FILE_DECIDER_FMOD_RET);
}

/* The same decision where only latency is armed: an fentry trampoline neither calls the
 * function from itself nor keeps a frame for its result, so it costs every read and write of
 * the node less (bench/README.md); it can't fail a call, and needn't. */
KFUNC_PROBE(security_file_permission, struct file *file, int mask)
{
	decide_read_write(file, mask, io_file_inode_mode(file), KFAULT_IO_FILE_DECIDER_FENTRY);
	return 0;
}
#ifdef KFAULT_IO_URING
/* A regular file a targeted task opens while a rule on read or write is armed: its path walked
 * now (bpf_d_path may be called here, as at the read and write hook), so that io_uring_submit,
 * which can't walk a path, finds its match cached (kfault_io_files) for the requests on it. */
static __always_inline void match_opened_file(struct file *file)
{
	__u32 zero = 0, read = KFAULT_IO_METHOD_READ, write = KFAULT_IO_METHOD_WRITE, targets = 0, *mask, *armed;

	mask = kfault_io_method_armed.lookup(&read);
	targets |= mask ? *mask : 0;
	mask = kfault_io_method_armed.lookup(&write);
	targets |= mask ? *mask : 0;
	if (!targets || !S_ISREG(io_file_inode_mode(file)) || (io_file_mode(file) & IO_FMODE_NOACCOUNT))
		return;
	if (!targeting_rules(targets))
		return;
	armed = kfault_io_armed.lookup(&zero);
	if (armed)
		file_matches(file, *armed);
}

/* io_uring_enter's return, with the file hooks (no sys_exit tracepoint then): the hold owed
 * to its caller (give_owed_hold). x86_64's syscall entry, as syscalls.h's numbers. */
KRETFUNC_PROBE(__x64_sys_io_uring_enter, struct pt_regs *regs, long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct kfault_io_call *call = kfault_io_calls.lookup(&id);

	if (call && call->hold_owed) {
		give_owed_hold(id);
		kfault_io_calls.delete(&id);
	}
	return 0;
}
#endif
#endif /* KFAULT_IO_FILE_HOOKS */

/* Where the decided error is returned. An open that creates is refused at path_mknod /
 * inode_create, before the file exists; any open at file_open; read and write (all their
 * vector and positional forms) and readdir at file_permission, before any byte moves; mkdir,
 * rmdir, unlink and rename at their security_path_* hooks, before the namespace changes; the stat
 * family at inode_getattr; setattr at inode_setattr, before notify_change changes anything. */
struct file;
struct path;
struct dentry;
struct inode;

#ifdef KFAULT_IO_ERRNO_LSM
LSM_PROBE(file_open, struct file *file)
{
	return decided_error();
}

LSM_PROBE(file_permission, struct file *file, int mask)
{
	return decided_error();
}

LSM_PROBE(path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev)
{
	return decided_error();
}

LSM_PROBE(inode_create, struct inode *dir, struct dentry *dentry, umode_t mode)
{
	return decided_error();
}

LSM_PROBE(path_mkdir, const struct path *dir, struct dentry *dentry, umode_t mode)
{
	return decided_error();
}

LSM_PROBE(path_rmdir, const struct path *dir, struct dentry *dentry)
{
	return decided_error();
}

LSM_PROBE(path_unlink, const struct path *dir, struct dentry *dentry)
{
	return decided_error();
}

LSM_PROBE(inode_getattr, const struct path *path)
{
	return decided_error();
}

/* Arguments unused: 6.3 put a struct mnt_idmap * before the dentry. */
LSM_PROBE(inode_setattr, void *first, void *second)
{
	return decided_error();
}

LSM_PROBE(path_rename, const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
	  struct dentry *new_dentry, unsigned int flags)
{
	return decided_error();
}
#endif

/* With the file hooks, reads and writes are decided at security_file_permission (above). */
#if defined(KFAULT_IO_ERRNO_FMOD_RET) || defined(KFAULT_IO_FILE_HOOKS)
KMOD_RET(security_file_open, struct file *file, int ret)
{
#if defined(KFAULT_IO_FILE_HOOKS) && defined(KFAULT_IO_URING)
	match_opened_file(file);
#endif
	return decided_error();
}

#ifndef KFAULT_IO_FILE_HOOKS
KMOD_RET(security_file_permission, struct file *file, int mask, int ret)
{
	return decided_error();
}
#endif

KMOD_RET(security_path_mknod, const struct path *dir, struct dentry *dentry, umode_t mode, unsigned int dev, int ret)
{
	return decided_error();
}

KMOD_RET(security_inode_create, struct inode *dir, struct dentry *dentry, umode_t mode, int ret)
{
	return decided_error();
}

KMOD_RET(security_path_mkdir, const struct path *dir, struct dentry *dentry, umode_t mode, int ret)
{
	return decided_error();
}

KMOD_RET(security_path_rmdir, const struct path *dir, struct dentry *dentry, int ret)
{
	return decided_error();
}

KMOD_RET(security_path_unlink, const struct path *dir, struct dentry *dentry, int ret)
{
	return decided_error();
}

KMOD_RET(security_inode_getattr, const struct path *path, int ret)
{
	return decided_error();
}

/* Every change of attributes goes through notify_change, which asks here first: chmod, chown,
 * truncate, utimes and their forms. (user_namespace *, before 6.3 mnt_idmap *: unused.) */
KMOD_RET(security_inode_setattr, void *idmap, struct dentry *dentry, void *attr, int ret)
{
	return decided_error();
}

KMOD_RET(security_path_rename, const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
	 struct dentry *new_dentry, unsigned int flags, int ret)
{
	return decided_error();
}
#endif
