"""What knows the kernel: bcc and the BPF programs, tc and netlink, namespaces and cgroups, helper processes."""
