"""The ``intercom`` command: run the service, press the button, ask its status, check a config, check the door."""

from __future__ import annotations

import argparse
import json
import sys
import time

from intercom.errors import IntercomError


def _build_parser() -> argparse.ArgumentParser:
    from intercom.service.control import default_socket_path

    parser = argparse.ArgumentParser(prog="intercom", description="Matrix doorbell intercom")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the intercom service")
    run.add_argument("--config", default="/etc/intercom/intercom.toml", help="config file (TOML)")
    run.add_argument("--simulate", action="store_true",
                     help="simulated hardware: mock GPIO, ALSA file devices, synthetic camera")
    run.add_argument("--socket", default=default_socket_path(), help="control socket path")
    run.add_argument("-v", "--verbose", action="store_true", help="also log ignored events and details")

    for name, text in (("press", "press a bell button of the running service, exactly as the button does"),
                       ("status", "show the running service's call state, LEDs, homeserver connection, residents, "
                                  "last ring and last call")):
        cmd = sub.add_parser(name, help=text)
        if name == "press":
            cmd.add_argument("button", nargs="?", type=int, default=1,
                             help="which button, counted from 1 as in the config's [[buttons]] (default 1)")
        cmd.add_argument("--socket", default=default_socket_path(), help="control socket path")
        cmd.add_argument("--json", action="store_true", help="print the raw JSON reply")

    trust = sub.add_parser("trust", help="show which of a resident's sessions the door trusts, or confirm one")
    trust.add_argument("device", nargs="?", help="the device ID of the resident's session to trust")
    trust.add_argument("--identity", action="store_true",
                       help="accept the resident's changed identity (after they reset their keys)")
    trust.add_argument("--resident", help="whose sessions (a user ID; default: the first resident, or for a device "
                                          "the resident who has it)")
    trust.add_argument("--socket", default=default_socket_path(), help="control socket path")
    trust.add_argument("--json", action="store_true", help="print the raw JSON reply")

    check = sub.add_parser("check-config", help="validate a config file and explain every problem")
    check.add_argument("file", help="config file (TOML)")

    doctor = sub.add_parser("doctor", help="check the config, homeserver, room, TURN, microphone, speaker, camera, "
                                           "pins, disk and clock, and say how to fix what is wrong")
    doctor.add_argument("--config", default="/etc/intercom/intercom.toml", help="config file (TOML)")
    doctor.add_argument("--simulate", action="store_true",
                        help="check the simulated hardware of intercom run --simulate instead of the real devices")
    doctor.add_argument("--socket", default=default_socket_path(), help="control socket of the running service")
    doctor.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import faulthandler

    from intercom.app import Service, configure_logging
    from intercom.service.config import ConfigError, load_config
    from intercom.service.memory import tune_malloc

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{args.config}: {problem}", file=sys.stderr)
        print(f"fix the config (intercom check-config {args.config}) and start again", file=sys.stderr)
        return 2
    configure_logging(args.verbose)
    tune_malloc()  # before the door's threads exist: see intercom.service.memory
    faulthandler.enable()  # a stuck door killed by systemd's watchdog (SIGABRT) says where it was stuck
    return asyncio.run(Service(config, simulate=args.simulate, control_socket=args.socket).run())


def _doctor(args: argparse.Namespace) -> int:
    import logging

    from intercom.service.doctor import Options, doctor_main

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    return doctor_main(Options(config_path=args.config, simulate=args.simulate, socket=args.socket), sys.stdout,
                       as_json=args.json)


def _control(args: argparse.Namespace) -> int:
    from intercom.service.control import send_command

    command = args.command
    if command == "trust":
        if args.identity and args.device:
            print("intercom trust: give a device ID or --identity, not both", file=sys.stderr)
            return 2
        command = "trust --identity" if args.identity else (f"trust {args.device}" if args.device else "trust")
        if args.resident:
            command = command.replace("trust", f"trust --resident {args.resident}", 1)
    elif command == "press":
        command = f"press {args.button}"
    reply = send_command(command, args.socket)
    if args.json or not reply.get("ok"):
        print(json.dumps(reply, indent=2))
        return 0 if reply.get("ok") else 1
    if args.command == "trust":
        _print_trust(reply["trust"])
    elif args.command == "press":
        print(f"pressed; LEDs now show {reply.get('led')}")
        _print_ring(reply.get("ring"))
    else:
        print(f"call:       {reply['call_state']}" + (f" ({reply['direction']}, {reply['call_id']})"
                                                      if reply.get("call_id") else ""))
        print(f"LEDs:       {reply['led']}")
        print(f"homeserver: {reply['homeserver']}")
        if reply.get("matrixrtc"):
            print(f"matrixrtc:  {reply['matrixrtc']}" + (" (Element Call rings possible)"
                                                        if reply["matrixrtc"] == "available" else ""))
        if reply.get("room_problem"):
            print(f"room:       {reply['room_problem']}")
        if reply.get("fault"):
            print(f"attention:  {reply['fault']}")
        if reply.get("network_warning"):
            print(f"network:    {reply['network_warning']}")
        if reply.get("trust"):
            _print_trust(reply["trust"])
        household = reply.get("household") or []
        if len(household) > 1:
            for r in household:
                rights = [w for w, on in (("answered", r["answer_calls"]), ("may open", r["open_door"])) if on]
                quiet = f", quiet {r['quiet_hours']}" if r.get("quiet_hours") else ""
                quiet += f", rung by {r['rung_by']}" if r.get("rung_by") else ""
                state = f"in a call ({r['call']})" if r.get("call") else (r.get("room_problem") or "ready")
                print(f"resident:   {r['user_id']}: {state} [{', '.join(rights) or 'rung only'}{quiet}]")
        _print_ring(reply.get("ring"))
        last = reply.get("last_call")
        print(f"last call:  {last['summary'] if last else 'none since start'}")
        opened = reply.get("last_opening")
        if opened:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(opened["at"]))
            print(f"last opened: {when} by {opened['by']} (ring {opened['call_id']})")
    return 0


def _print_ring(ring: dict | None) -> None:
    """The last press: who was rung, who is still ringing, who answered or declined."""
    if not ring:
        return
    button = f" ({ring['label']})" if ring.get("label") else ""
    parts = [f"rang {', '.join(ring['rung']) or 'nobody'}"]
    for key, words in (("ringing", "still ringing"), ("declined", "declined by"), ("quiet", "quiet hours for")):
        if ring.get(key):
            parts.append(f"{words} {', '.join(ring[key])}")
    if ring.get("answered_by"):
        parts.append(f"answered by {ring['answered_by']}")
    for user, why in (ring.get("not_rung") or {}).items():
        parts.append(f"not {user}: {why}")
    print(f"last ring{button}: " + "; ".join(parts))


def _print_trust(trust: dict) -> None:
    if trust.get("warning"):
        print(f"encryption: {trust['warning']}")
    if trust.get("identity_problem"):
        print(f"SECURITY:   {trust['identity_problem']}; nothing is trusted until you run intercom trust --identity")
    if trust.get("room_encrypted"):
        print(f"trusted:    {', '.join(trust.get('trusted_devices') or []) or 'none'}")
        for device_id, name in (trust.get("untrusted_devices") or {}).items():
            print(f"untrusted:  {device_id} {name} (intercom trust {device_id} to trust it)")
    if trust.get("identity_pending"):
        print("identity:   the owner set up cross-signing; intercom trust --identity adopts it")


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            from intercom.service.config import check_config_main

            return check_config_main(args.file, sys.stdout)
        if args.command == "doctor":
            return _doctor(args)
        if args.command == "run":
            return _run(args)
        return _control(args)
    except IntercomError as exc:
        print(f"intercom {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
