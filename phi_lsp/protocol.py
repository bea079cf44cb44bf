"""JSON-RPC rules pygls 2.1.1 leaves out: every request gets an answer.

pygls parses a message with its params typed; when that fails (a string where a position's
`character` should be), it logs the error and drops the request, so the client waits forever.
Here such a request is answered with `-32602 Invalid params` (or `-32603` when the message could
not be read at all), and the message is then skipped. Requests after `shutdown`, which pygls
also drops, get `-32600`.
"""

from __future__ import annotations

import logging
from typing import Any

from lsprotocol.types import EXIT
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInternalError,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
)
from pygls.protocol import LanguageServerProtocol

log = logging.getLogger(__name__)


class _Answered:
    """Stands in for a request that was already answered with an error."""

    jsonrpc = None


class PhiProtocol(LanguageServerProtocol):
    def structure_message(self, data: dict[str, Any]) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if "id" not in data or "method" not in data:
                raise  # a notification or a response: nobody waits for an answer
            error = exc if isinstance(exc, JsonRpcInvalidParams) else JsonRpcInternalError()
            detail = f"{error.message} for {data['method']}: {exc.__cause__ or exc}"
            log.warning("request %s answered with an error: %s", data["id"], detail)
            reply = type(error)(message=detail[:500])
            self._send_response(data["id"], error=reply.to_response_error())
            return _Answered()

    def handle_message(self, message: Any) -> None:
        if isinstance(message, _Answered):
            return
        method = getattr(message, "method", None)
        msg_id = getattr(message, "id", None)
        if self._shutdown and method not in (None, EXIT) and msg_id is not None:
            # pygls drops requests after `shutdown`; JSON-RPC wants an answer.
            error = JsonRpcInvalidRequest(message=f"{method}: the server is shutting down")
            self._send_response(msg_id, error=error.to_response_error())
            return
        super().handle_message(message)
