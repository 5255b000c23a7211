/* stat.h - attrOverride: the fields a rule names, written over the struct stat or struct statx
 * a stat-family call returned to its caller (bpf_probe_write_user). Owns no map. */
#ifndef KFAULT_LIB_STAT_H
#define KFAULT_LIB_STAT_H

#include <asm/stat.h>   /* struct stat of the 64-bit ABI (UAPI) */
#include <linux/stat.h> /* struct statx (UAPI) */

#include "kfault.h"

/* Store one field of the caller's struct: `type` is struct stat or struct statx. */
#define PUT_FIELD(buffer, type, member, value)                                                                \
	do {                                                                                                  \
		__typeof__(((type *)0)->member) v_ = (value);                                                 \
		bpf_probe_write_user((void *)((buffer) + __builtin_offsetof(type, member)), &v_, sizeof(v_)); \
	} while (0)

static __always_inline void override_stat(const struct kfault_io_rule *rule, __u64 buffer)
{
	__u32 attrs = rule->attrs;

	if (attrs & KFAULT_IO_ATTR_INO)
		PUT_FIELD(buffer, struct stat, st_ino, rule->ino);
	if (attrs & KFAULT_IO_ATTR_SIZE)
		PUT_FIELD(buffer, struct stat, st_size, rule->size);
	if (attrs & KFAULT_IO_ATTR_BLOCKS)
		PUT_FIELD(buffer, struct stat, st_blocks, rule->blocks);
	if (attrs & KFAULT_IO_ATTR_ATIME) {
		PUT_FIELD(buffer, struct stat, st_atime, rule->atime_sec);
		PUT_FIELD(buffer, struct stat, st_atime_nsec, rule->atime_nsec);
	}
	if (attrs & KFAULT_IO_ATTR_MTIME) {
		PUT_FIELD(buffer, struct stat, st_mtime, rule->mtime_sec);
		PUT_FIELD(buffer, struct stat, st_mtime_nsec, rule->mtime_nsec);
	}
	if (attrs & KFAULT_IO_ATTR_CTIME) {
		PUT_FIELD(buffer, struct stat, st_ctime, rule->ctime_sec);
		PUT_FIELD(buffer, struct stat, st_ctime_nsec, rule->ctime_nsec);
	}
	if (attrs & KFAULT_IO_ATTR_MODE) { /* kind or perm alone keeps the file's other bits */
		unsigned int mode = 0;

		bpf_probe_read_user(&mode, sizeof(mode), (void *)(buffer + __builtin_offsetof(struct stat, st_mode)));
		PUT_FIELD(buffer, struct stat, st_mode, (mode & ~rule->mode_mask) | (rule->mode & rule->mode_mask));
	}
	if (attrs & KFAULT_IO_ATTR_NLINK)
		PUT_FIELD(buffer, struct stat, st_nlink, rule->nlink);
	if (attrs & KFAULT_IO_ATTR_UID)
		PUT_FIELD(buffer, struct stat, st_uid, rule->uid);
	if (attrs & KFAULT_IO_ATTR_GID)
		PUT_FIELD(buffer, struct stat, st_gid, rule->gid);
	if (attrs & KFAULT_IO_ATTR_RDEV)
		PUT_FIELD(buffer, struct stat, st_rdev, rule->rdev);
}

static __always_inline void override_statx(const struct kfault_io_rule *rule, __u64 buffer)
{
	__u32 attrs = rule->attrs;

	if (attrs & KFAULT_IO_ATTR_INO)
		PUT_FIELD(buffer, struct statx, stx_ino, rule->ino);
	if (attrs & KFAULT_IO_ATTR_SIZE)
		PUT_FIELD(buffer, struct statx, stx_size, rule->size);
	if (attrs & KFAULT_IO_ATTR_BLOCKS)
		PUT_FIELD(buffer, struct statx, stx_blocks, rule->blocks);
	if (attrs & KFAULT_IO_ATTR_ATIME) {
		PUT_FIELD(buffer, struct statx, stx_atime.tv_sec, rule->atime_sec);
		PUT_FIELD(buffer, struct statx, stx_atime.tv_nsec, rule->atime_nsec);
	}
	if (attrs & KFAULT_IO_ATTR_MTIME) {
		PUT_FIELD(buffer, struct statx, stx_mtime.tv_sec, rule->mtime_sec);
		PUT_FIELD(buffer, struct statx, stx_mtime.tv_nsec, rule->mtime_nsec);
	}
	if (attrs & KFAULT_IO_ATTR_CTIME) {
		PUT_FIELD(buffer, struct statx, stx_ctime.tv_sec, rule->ctime_sec);
		PUT_FIELD(buffer, struct statx, stx_ctime.tv_nsec, rule->ctime_nsec);
	}
	if (attrs & KFAULT_IO_ATTR_MODE) {
		__u16 mode = 0;

		bpf_probe_read_user(&mode, sizeof(mode), (void *)(buffer + __builtin_offsetof(struct statx, stx_mode)));
		PUT_FIELD(buffer, struct statx, stx_mode, (mode & ~rule->mode_mask) | (rule->mode & rule->mode_mask));
	}
	if (attrs & KFAULT_IO_ATTR_NLINK)
		PUT_FIELD(buffer, struct statx, stx_nlink, rule->nlink);
	if (attrs & KFAULT_IO_ATTR_UID)
		PUT_FIELD(buffer, struct statx, stx_uid, rule->uid);
	if (attrs & KFAULT_IO_ATTR_GID)
		PUT_FIELD(buffer, struct statx, stx_gid, rule->gid);
	if (attrs & KFAULT_IO_ATTR_RDEV) {
		PUT_FIELD(buffer, struct statx, stx_rdev_major, rule->rdev_major);
		PUT_FIELD(buffer, struct statx, stx_rdev_minor, rule->rdev_minor);
	}
}

#endif /* KFAULT_LIB_STAT_H */
