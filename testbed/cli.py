"""Verbs ``testbed`` (check, up, clean) and ``netem`` (apply, clear)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    tb = sub.add_parser("testbed", help="local multi-host testbed (network namespaces, emulated links)",
                        description="A local testbed: N hosts as network namespaces, links shaped to a "
                                    "network setting (delay by a user-space delay line, bandwidth by htb). "
                                    "Needs root.")
    tsub = tb.add_subparsers(dest="testbed_verb", metavar="ACTION")
    c = tsub.add_parser("check", help="measure RTT (ping) and throughput (iperf3) against the setting")
    c.add_argument("--network", "-n", required=True,
                   help="a setting ('delay 10ms bandwidth 1Gbps'), settings separated by ',', or 'seed'")
    c.add_argument("--seconds", type=float, default=3.0, help="iperf3 duration per setting (default 3)")
    c.add_argument("--pings", type=int, default=40, help="pings per setting (default 40)")
    c.add_argument("-v", "--verbose", action="store_true")
    c.set_defaults(func=_check)
    u = tsub.add_parser("up", help="bring a testbed up and keep it until Ctrl-C")
    u.add_argument("--hosts", type=int, default=3)
    u.add_argument("--network", "-n", default="default")
    u.set_defaults(func=_up)
    k = tsub.add_parser("clean", help="remove namespaces left by testbeds whose process is gone")
    k.set_defaults(func=_clean)
    tb.set_defaults(func=lambda a: (tb.print_help(), 2)[1])

    ne = sub.add_parser("netem", help="apply a network setting to a real interface with tc netem",
                        description="Apply a setting with `tc qdisc replace dev IF root netem delay D rate R` "
                                    "(as the seed's experiments did), and restore the previous qdisc.")
    nsub = ne.add_subparsers(dest="netem_verb", metavar="ACTION")
    a = nsub.add_parser("apply", help="save IF's qdisc, then put netem on it")
    a.add_argument("--iface", help="the interface to shape (required; never guessed)")
    a.add_argument("--network", "-n", required=True, help="a uniform setting, e.g. 'delay 10ms bandwidth 1Gbps'")
    a.add_argument("--limit", type=int, help="netem queue limit in packets (netem's default: 1000)")
    a.add_argument("--dry-run", action="store_true", help="print the tc commands, change nothing")
    a.add_argument("--state-dir", default=None, help="where the previous qdisc is saved (default /run/pipesim)")
    a.set_defaults(func=_netem_apply)
    cl = nsub.add_parser("clear", help="restore IF's saved qdisc")
    cl.add_argument("--iface", help="the interface to restore (required)")
    cl.add_argument("--dry-run", action="store_true")
    cl.add_argument("--state-dir", default=None)
    cl.set_defaults(func=_netem_clear)
    ne.set_defaults(func=lambda a: (ne.print_help(), 2)[1])


def _settings(text: str):
    from pipesim import network
    return network.parse_grid(text) if (text.strip().lower() in network.GRIDS or "," in text or "|" in text) \
        else [network.parse(text)]


def _require_testbed() -> None:
    from . import available
    ok, reason = available()
    if not ok:
        raise RuntimeError(f"cannot build a testbed: {reason}")


def _check(args) -> int:
    from pipesim import limits

    from . import check
    limits.CHECK_SECONDS.check(args.seconds, "--seconds")
    limits.CHECK_PINGS.check(args.pings, "--pings")
    settings = _settings(args.network)
    missing = check.missing_programs()
    if missing:
        print(f"pipesim testbed check: error: {', '.join(missing)} not found; install them "
              "(apt-get install iperf3 iputils-ping)", file=sys.stderr)
        return 2
    try:
        _require_testbed()
    except RuntimeError as e:
        print(f"pipesim testbed check: error: {e}", file=sys.stderr)
        return 2
    results = []
    for s in settings:
        print(f"checking {s.label!r} ...", file=sys.stderr, flush=True)
        try:
            results.append(check.check_setting(s, seconds=args.seconds, pings=args.pings, verbose=args.verbose))
        except RuntimeError as e:
            print(f"pipesim testbed check: error under {s.label!r}: {e}", file=sys.stderr)
            return 1
    print(check.table(results))
    print("\nTargets: RTT within 10% (or 0.2 ms) of twice the one-way delay; throughput within 10% "
          "of the bandwidth. Uncapped rows show what the path carries (one TCP stream); where that is "
          "below a cap, the machine (CPU) is the limit, not the shaping.")
    return 0 if all(r.rtt_ok and r.bw_ok is not False for r in results) else 1


def _up(args) -> int:
    import signal
    import time

    from . import Testbed
    testbed = Testbed(args.hosts, args.network, verbose=True)  # checks the arguments; starts nothing yet
    try:
        _require_testbed()
        with testbed as tb:
            for i, (a, ns) in enumerate(zip(tb.addresses, tb.namespaces)):
                print(f"host {i}: {a}  run inside: ip netns exec {ns} COMMAND")
            print("up; Ctrl-C to tear down", flush=True)
            signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
            while tb.is_up:
                time.sleep(0.5)
            print("the testbed's helper exited", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("torn down")
        return 0
    except RuntimeError as e:
        print(f"pipesim testbed up: error: {e}", file=sys.stderr)
        return 2


def _clean(args) -> int:
    from . import sysnet
    stale = sysnet.sweep_stale()
    print(f"removed {len(stale)} stale namespaces" + (f": {', '.join(stale)}" if stale else ""))
    return 0


def _netem_apply(args) -> int:
    from pipesim import network

    from . import netem
    try:
        return netem.apply(args.iface, network.parse(args.network), dry_run=args.dry_run, limit=args.limit,
                           state_dir=args.state_dir or netem.STATE_DIR)
    except (RuntimeError, PermissionError) as e:
        print(f"pipesim netem apply: error: {e}", file=sys.stderr)
        return 1


def _netem_clear(args) -> int:
    from . import netem
    try:
        return netem.clear(args.iface, dry_run=args.dry_run, state_dir=args.state_dir or netem.STATE_DIR)
    except (RuntimeError, PermissionError) as e:
        print(f"pipesim netem clear: error: {e}", file=sys.stderr)
        return 1
