/* hooked_calls.c - one call of each syscall SyscallChaos fails at a hook the other kernel tests
 * don't reach, made by a real program: tests/kernel/test_syscall_faults.py runs one in the
 * target cgroup and one outside it.
 *
 * It sets up what each call needs (a listener with a connection waiting, a datagram queued),
 * prints "ready", waits for a line on stdin (the rule is armed by then), makes each call once and
 * prints "<syscall> <errno>" for each (0: it succeeded). Nothing here retries: glibc's wrappers
 * are the plain syscalls (accept4 is not used, so accept is accept).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in loopback(void)
{
	struct sockaddr_in address = {.sin_family = AF_INET};

	address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	return address;
}

static void report(const char *syscall, int failed)
{
	printf("%s %d\n", syscall, failed ? errno : 0);
}

int main(void)
{
	struct sockaddr_in address = loopback(), bound;
	socklen_t length = sizeof(bound);
	char byte = 'x';
	struct iovec vector = {.iov_base = &byte, .iov_len = 1};
	struct msghdr message = {.msg_iov = &vector, .msg_iovlen = 1};
	int listener = socket(AF_INET, SOCK_STREAM, 0), client = socket(AF_INET, SOCK_STREAM, 0);
	int fresh = socket(AF_INET, SOCK_STREAM, 0), unbound = socket(AF_INET, SOCK_STREAM, 0);
	int datagrams = socket(AF_INET, SOCK_DGRAM, 0), status, pending;
	struct timespec now;
	pid_t child;

	/* before arming: a listener with a connection waiting; a UDP socket connected to itself
	 * with one datagram queued */
	if (bind(listener, (struct sockaddr *)&address, sizeof(address)) || listen(listener, 4) ||
	    getsockname(listener, (struct sockaddr *)&bound, &length) ||
	    connect(client, (struct sockaddr *)&bound, sizeof(bound)) ||
	    bind(datagrams, (struct sockaddr *)&address, sizeof(address)) ||
	    getsockname(datagrams, (struct sockaddr *)&bound, &length) ||
	    connect(datagrams, (struct sockaddr *)&bound, sizeof(bound)) || send(datagrams, &byte, 1, 0) != 1) {
		perror("setup");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	if (getchar() == EOF)
		return 1;

	report("bind", bind(fresh, (struct sockaddr *)&address, sizeof(address)) != 0);
	report("listen", listen(unbound, 4) != 0);
	report("accept", accept(listener, NULL, NULL) < 0);
	report("sendmsg", sendmsg(datagrams, &message, 0) != 1);
	report("recvmsg", recvmsg(datagrams, &message, MSG_DONTWAIT) != 1);
	report("ioctl", ioctl(datagrams, FIONREAD, &pending) != 0);
	report("kill", kill(getpid(), 0) != 0); /* signal 0: the permission check alone */
	/* the clock set to what it reads: as root it moves by the microseconds between the two */
	clock_gettime(CLOCK_REALTIME, &now);
	report("clock_settime", clock_settime(CLOCK_REALTIME, &now) != 0);
	fflush(stdout);
	/* execve in a child (fork is not named): its exit status is execve's errno, or true's 0 */
	child = fork();
	if (child == 0) {
		char *argv[] = {"true", NULL};

		execve("/bin/true", argv, environ);
		_exit(errno);
	}
	if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status))
		return 1;
	printf("execve %d\n", WEXITSTATUS(status));
	return 0;
}
