"""An aiosmtpd handler for Airlock's tests: appends every message it accepts
to a file as one JSON line (envelope sender, recipients, the message as
text), so a test reads exactly what reached the mail server."""

import json
import os


class Sink:
    def __init__(self, path):
        self.path = path

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("Sink takes one argument: the file to append to")
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        line = json.dumps(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", errors="replace"),
            }
        )
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        return "250 OK"
