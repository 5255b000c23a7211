"""Classic tc attachment with pyroute2 (clsact filters, fq roots, the ifb of received-packet
delays): add ours, and leave each interface as we found it."""
import contextlib
import logging
import os
from dataclasses import dataclass, field

from pyroute2 import NetlinkError

from kfault_agent.errors import InterfaceBusy, InterfaceGone, NetnsGone, kernel_errors
from kfault_agent.kernel import owners
from kfault_agent.kernel.topology import candidate_peer_namespaces, rtnl

log = logging.getLogger(__name__)

PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}
FILTER_PREFIX = "kfault_"
ETH_P_ALL = 0x0003


@contextlib.contextmanager
def _netlink_on(link, doing):
    """An rtnetlink handle in `link`'s namespace; what the kernel refuses there becomes a
    Refusal naming the interface, its namespace and `doing` (a deleted link: InterfaceGone)."""
    gone = InterfaceGone(f"interface {link.ifname} (index {link.ifindex}) in {link.netns} was deleted "
                         f"while kfault went to {doing}")
    with kernel_errors(f"can't {doing} on interface {link.ifname} in {link.netns}", gone=gone):
        with rtnl(link.netns) as ipr:
            yield ipr


def _filters(ipr, ifindex, hook):
    return [f for f in ipr.get_filters(index=ifindex, parent=PARENTS[hook]) if f["handle"]]


def _filter_name(msg):
    return msg.get_nested("TCA_OPTIONS", "TCA_BPF_NAME") or ""


def _our_filter_name(program):
    """kfault_<program>@<owner>: the owner tells a live process's filters from a dead one's."""
    return f"{FILTER_PREFIX}{program}@{owners.tag()}"


def _is_stale(name):
    """A kfault filter whose owner is gone (or that names none)."""
    return name.startswith(FILTER_PREFIX) and not owners.is_alive(name.rpartition("@")[2])


def _priority_before_all(link, hook, filters):
    """A priority at which our filter runs before every other filter at the hook: the highest
    free one below the lowest taken by someone else (kfault's own may come first). None free
    below it (0 asks the kernel to choose) is refused, naming that filter: it may end the chain
    (a CNI's redirect) before ours runs."""
    taken = {f["info"] >> 16: _filter_name(f) or "unnamed" for f in filters}
    foreign = [prio for prio, name in taken.items() if not name.startswith(FILTER_PREFIX)]
    if not foreign:
        return min(set(range(1, len(taken) + 2)) - set(taken))
    free = [prio for prio in range(1, min(foreign)) if prio not in taken]
    if not free:
        raise InterfaceBusy(f"the {hook} of interface {link.ifname} in {link.netns} has a tc filter at priority "
                            f"{min(foreign)} ({taken[min(foreign)]}) and no free priority before it; kfault's must "
                            "run first: remove that filter, or use a kernel with tcx (6.6 or later), where kfault "
                            "attaches ahead of it")
    return max(free)


def _priority_right_after(link, hook, filters, ours):
    """The priority right after our own filter's, which must be free (a filter of someone else
    there would run between them)."""
    taken = {f["info"] >> 16: _filter_name(f) or "unnamed" for f in filters}
    if ours + 1 in taken:
        raise InterfaceBusy(f"the {hook} of interface {link.ifname} in {link.netns} has a tc filter at priority "
                            f"{ours + 1} ({taken[ours + 1]}), right after kfault's, where kfault puts the filter "
                            "that sends received packets to be delayed: remove that filter")
    return ours + 1


def _has_clsact(ipr, ifindex):
    return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


@dataclass
class ClsactHooks:
    """Our filters on one interface, and whether the clsact qdisc was ours to begin with."""
    link: object
    created_clsact: bool = False
    filters: dict = field(default_factory=dict)   # hook -> (handle, info)

    @classmethod
    def attach(cls, link, programs, redirect_to=None, after=None):
        """programs: {hook: (prog_fd, name)}. Our filters go first (a priority below every
        filter there) and return 'continue', so filters already there still see every packet
        we pass. With `redirect_to` (an ifindex) they are classifiers instead, whose match
        redirects the packet to that interface's egress (tc's mirred action), each at the
        priority right after `after` ({hook: our own filter's priority}) where given."""
        hooks = cls(link)
        with _netlink_on(link, "attach kfault's tc filters") as ipr:
            if not _has_clsact(ipr, link.ifindex):
                ipr.tc("add", "clsact", link.ifindex)
                hooks.created_clsact = True
            try:
                for hook, (fd, name) in programs.items():
                    filters = _filters(ipr, link.ifindex, hook)
                    if after and hook in after:
                        prio = _priority_right_after(link, hook, filters, after[hook])
                    else:
                        prio = _priority_before_all(link, hook, filters)
                    how = ({"action": {"kind": "mirred", "direction": "egress", "action": "redirect",
                                       "ifindex": redirect_to}} if redirect_to else {"direct_action": True})
                    ipr.tc("add-filter", "bpf", link.ifindex, ":1", fd=fd, name=_our_filter_name(name),
                           parent=PARENTS[hook], classid=1, prio=prio, protocol=ETH_P_ALL, **how)
                    ours = [f for f in _filters(ipr, link.ifindex, hook) if f["info"] >> 16 == prio]
                    hooks.filters[hook] = (ours[0]["handle"], ours[0]["info"])
            except Exception:
                hooks._remove(ipr)
                raise
        return hooks

    def priority(self, hook):
        """Our filter's priority at the hook."""
        return self.filters[hook][1] >> 16

    def detach(self):
        with _netlink_on(self.link, "detach kfault's tc filters") as ipr:
            self._remove(ipr)

    def _remove(self, ipr):
        for hook, (handle, info) in self.filters.items():
            ipr.tc("del-filter", index=self.link.ifindex, handle=handle, parent=PARENTS[hook], info=info)
        self.filters.clear()
        if self.created_clsact:
            foreign = [f for hook in PARENTS for f in _filters(ipr, self.link.ifindex, hook)]
            if foreign:
                log.warning("%s: leaving clsact in place: %d filters of others were added on it",
                            self.link.ifname, len(foreign))
            else:
                ipr.tc("del", "clsact", self.link.ifindex)


def remove_stale_filters():
    """Delete the filters and ifbs of kfault processes that are gone, in the node's namespace
    and every named one (a lab host's, a pod's where the runtime names it). Their rules have
    expired already; this takes away the lookup. (tcx links go with their process.)"""
    removed = 0
    for netns in candidate_peer_namespaces():
        try:
            with rtnl(netns) as ipr:
                removed += _remove_stale_filters(ipr) + _remove_stale_ifbs(ipr)
        except (OSError, NetlinkError) as err:   # a namespace or link going away as we look
            log.info("stale filters in %s: %s", netns, err)
    return removed


def _remove_stale_filters(ipr):
    removed = 0
    for link in ipr.get_links():
        removed_here = 0
        for hook, parent in PARENTS.items():
            try:
                filters = _filters(ipr, link["index"], hook)
            except Exception:  # noqa: BLE001 - no clsact here
                continue
            for f in filters:
                if _is_stale(_filter_name(f)):
                    ipr.tc("del-filter", index=link["index"], handle=f["handle"], parent=parent, info=f["info"])
                    removed_here += 1
        if removed_here:
            _remove_clsact_if_empty(ipr, link["index"])
        removed += removed_here
    return removed


def _remove_clsact_if_empty(ipr, ifindex):
    """A dead agent can't tell whether it added the clsact its filters were on (a live one
    remembers, ClsactHooks.created_clsact). One that has nothing left on it after its filters
    went is taken to be its: whoever else made it has no filter there, and tc adds it again
    with their next one. A clsact with any other filter stays."""
    if any(_filters(ipr, ifindex, hook) for hook in PARENTS):
        return
    ipr.tc("del", "clsact", ifindex)


TC_H_ROOT = 0xFFFFFFFF
IFB_ALIAS_PREFIX = "kfault@"


def _remove_stale_ifbs(ipr):
    stale = [link["index"] for link in ipr.get_links()
             if link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") == "ifb"
             and (link.get_attr("IFLA_IFALIAS") or "").startswith(IFB_ALIAS_PREFIX)
             and not owners.is_alive(link.get_attr("IFLA_IFALIAS")[len(IFB_ALIAS_PREFIX):])]
    for index in stale:
        ipr.link("del", index=index)
    return len(stale)


@dataclass
class EdtIfb:
    """An ifb in a target's namespace, for delays and rates on what the target receives.

    An ingress has no queue to hold a packet in, so the target's ingress program redirects a
    packet that a delay or bandwidth rule applies to, to this ifb's egress: there `egress_from`
    gives it a departure time, fq (the ifb's root) holds it until then, and the ifb hands it
    back to the interface it came in on, whose tc ingress it then skips. Its alias names its
    owner, so that `kfault cleanup` deletes one a killed agent left. Deleting it takes its
    qdisc and programs with it."""
    link: object         # the ifb
    hooks: object = None

    @classmethod
    def add(cls, where, attach, program):
        """An ifb in `where`'s namespace (a Link: its index is not used) with fq at its root
        and `program` ({hook: (prog_fd, name)}) attached by `attach` (ClsactHooks.attach or
        TcxHooks.attach)."""
        name = f"kfb{os.getpid()}"
        with _netlink_on(where, f"add the ifb {name} that delays received packets") as ipr:
            ipr.link("add", ifname=name, kind="ifb")
            ifindex = ipr.link_lookup(ifname=name)[0]
            ifb = cls(type(where)(where.netns, ifindex, name))
            try:
                ipr.link("set", index=ifindex, ifalias=f"{IFB_ALIAS_PREFIX}{owners.tag()}", state="up")
                ipr.tc("add", "fq", ifindex, 0x10000)
                ifb.hooks = attach(ifb.link, program)
            except Exception:
                ipr.link("del", index=ifindex)
                raise
        return ifb

    def delete(self):
        if self.hooks is not None:
            self.hooks.detach()
        with _netlink_on(self.link, f"delete the ifb {self.link.ifname}") as ipr:
            ipr.link("del", index=self.link.ifindex)




@dataclass
class FqRoot:
    """sch_fq as the interface's root qdisc, which holds packets until skb->tstamp (EDT).

    A veth's root is noqueue unless someone set one: we install fq there and delete it again
    on release, which restores noqueue exactly. An fq already in place is used as it is. Any
    other root qdisc belongs to someone else and is left alone: the experiment is refused."""
    link: object
    installed: bool = False

    @classmethod
    def hold(cls, link):
        with _netlink_on(link, "install sch_fq as the root qdisc") as ipr:
            roots = [q for q in ipr.get_qdiscs(index=link.ifindex) if q["parent"] == TC_H_ROOT]
            kind = roots[0].get_attr("TCA_KIND") if roots else "noqueue"
            if kind == "fq":
                return cls(link)
            if kind != "noqueue":
                raise InterfaceBusy(f"interface {link.ifname} in {link.netns} has root qdisc {kind}; delay and "
                                    "bandwidth need fq there and kfault replaces only noqueue")
            ipr.tc("add", "fq", link.ifindex, 0x10000)
            return cls(link, installed=True)

    def release(self):
        if self.installed:
            with _netlink_on(self.link, "remove the sch_fq kfault installed") as ipr:
                ipr.tc("del", "fq", self.link.ifindex, 0x10000)
            self.installed = False


def fq_roots():
    """The fq roots of one process's engines, counted per interface across all of them: an
    interface has one root qdisc, so a NetworkChaos delay and an HTTPChaos delay on one pod must
    share it, and the last of either to let go removes it (each engine counting alone, the
    first to end removed the fq the other's delay still needed, and that delay held nothing)."""
    return SharedPerLink(FqRoot.hold, FqRoot.release)


@dataclass
class _Held:
    thing: object        # a ClsactHooks or an FqRoot
    users: int = 0


class SharedPerLink:
    """One tc object per interface (our filters there, an fq root), shared by every placement
    that needs it: made by the first to hold it, released when the last one lets go."""

    def __init__(self, make, release):
        self._make = make          # (link, *args) -> the object, in the kernel
        self._release = release    # (the object) -> None: undo it in the kernel
        self._held = {}            # (netns inode, ifindex) -> _Held

    def hold(self, link, *args):
        """Count one more user of `link`'s object, making it first if needed; returns the key
        to let go of it by."""
        key = (link.netns.inode, link.ifindex)
        if key not in self._held:
            self._held[key] = _Held(self._make(link, *args))
        self._held[key].users += 1
        return key

    def get(self, key):
        """The object held under `key`."""
        return self._held[key].thing

    def let_go(self, keys):
        """One user fewer for each key; the last one out releases the object."""
        for key in keys:
            held = self._held[key]
            held.users -= 1
            if held.users:
                continue
            del self._held[key]
            try:
                self._release(held.thing)
            except (NetnsGone, InterfaceGone) as err:
                log.info("nothing to undo on %s: %s", held.thing.link.ifname, err)

