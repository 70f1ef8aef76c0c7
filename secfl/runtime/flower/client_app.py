"""secfl's Flower ClientApp: a thin relay from Flower's message to the site's own program.

It imports only Flower and the standard library (it starts afresh for every message), reads the
site program's pipe from the node config (``secfl-socket``), forwards the request and returns
the answer. The site program holds the data and the parties (:mod:`secfl.runtime.flower.site`).
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from secfl.runtime.flower.ipc import call

__all__ = ["client_app"]

RECORD = "secfl"

client_app = ClientApp()


@client_app.query("secfl")
def _relay(msg: Message, context: Context) -> Message:
    rec = msg.content[RECORD]
    path = str(context.node_config.get("secfl-socket", ""))
    try:
        ok, answer = call(path, int(rec["party"]), str(rec["stage"]), bytes(rec["data"]))  # type: ignore[arg-type]
        reply = ConfigRecord({"data": answer}) if ok else ConfigRecord({"error": answer.decode(errors="replace")})
    except OSError as exc:
        reply = ConfigRecord({"error": f"the site program is not reachable ({exc})"})
    return Message(RecordDict({RECORD: reply}), reply_to=msg)
