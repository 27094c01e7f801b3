"""The ``check-mail`` command: the DNS records this configuration's mail needs, and what is wrong with it."""

from __future__ import annotations

import argparse
import textwrap
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command
from syndication.cli.output import EXIT_FAILED, EXIT_OK, print_json

if TYPE_CHECKING:
    from syndication.app.mailcheck import DnsRecord
    from syndication.config import Settings


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``check-mail``."""
    checking = add_command(
        commands, "check-mail", _check_mail, "print the SPF, DKIM and DMARC records to publish for this mail", common
    )
    checking.description = (
        "Print the From domain, the SPF, DKIM and DMARC TXT records the operator must publish in DNS for the mail"
        " this configuration sends (the DKIM one with the public key of [dkim] key_file), and what in the settings"
        " will make receivers distrust it. Nothing is looked up. Exit status 1 when there is a warning."
    )
    checking.add_argument("--json", action="store_true", help="one JSON object: the domains, records and warnings")


def _check_mail(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.mailcheck import dns_records

    report = dns_records(settings)
    if args.json:
        print_json(report)
        return EXIT_FAILED if report.warnings else EXIT_OK
    print(f"From domain: {report.from_domain}")
    print(f"Envelope (Return-Path) domain: {report.envelope_domain}")
    _print_record("SPF", report.spf)
    if report.dkim is not None:
        _print_record("DKIM", report.dkim)
    if report.dkim_ed25519 is not None:
        _print_record("DKIM (Ed25519)", report.dkim_ed25519)
    _print_record("DMARC", report.dmarc)
    print()
    if not report.warnings:
        print("No warnings.")
        return EXIT_OK
    print(f"Warnings ({len(report.warnings)}):")
    for warning in report.warnings:
        print(textwrap.fill(warning, width=100, initial_indent="- ", subsequent_indent="  "))
    return EXIT_FAILED


def _print_record(label: str, record: DnsRecord) -> None:
    print()
    print(f"{label}: TXT record at {record.name}")
    # On one line however long, to be copied whole.
    print(f"  {record.value}" if record.value is not None else "  (cannot be written: see the warnings)")
    print(textwrap.fill(record.explanation, width=100, initial_indent="  ", subsequent_indent="  "))
