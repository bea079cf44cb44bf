"""JSON-RPC rules pygls 2.1.1 leaves out: every request gets an answer.

pygls parses a message with its params typed; when that fails (a string where a position's
`character` should be), it logs the error and drops the request, so the client waits forever.
Here such a request is answered with `-32602 Invalid params` (or `-32603` when the message could
not be read at all), and the message is then skipped. Requests after `shutdown`, which pygls
also drops, get `-32600`.

The same holds the other way: a client's answer to one of our requests (workspace/applyEdit
answered with `null`, workspace/configuration with a number) that does not structure is dropped
by pygls, and whatever awaited it waited forever. Here it fails that wait with an error instead.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from cattrs import BaseValidationError, transform_error
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
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The method of each request we sent and await an answer to, by id: for error messages.
        self._awaited: dict[Any, str] = {}

    def send_request(
        self,
        method: str,
        params: Any | None = None,
        callback: Callable[[Any], None] | None = None,
        msg_id: Any = None,
    ) -> Future[Any]:
        msg_id = str(uuid.uuid4()) if msg_id is None else msg_id
        self._awaited[msg_id] = method
        return super().send_request(method, params, callback, msg_id)

    def structure_message(self, data: dict[str, Any]) -> Any:
        is_response = (
            "jsonrpc" in data and isinstance(data.get("id"), str | int) and "method" not in data
        )
        method = self._awaited.pop(data["id"], None) if is_response else None
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if is_response:
                self._fail_wait(data["id"], method or "a request", exc)
                return _Answered()
            if "id" not in data or "method" not in data:
                raise  # a notification: nobody waits for an answer
            error = exc if isinstance(exc, JsonRpcInvalidParams) else JsonRpcInternalError()
            detail = f"{error.message} for {data['method']}: {exc.__cause__ or exc}"
            log.warning("request %s answered with an error: %s", data["id"], detail)
            reply = type(error)(message=detail[:500])
            self._send_response(data["id"], error=reply.to_response_error())
            return _Answered()

    def _answer_nobody_awaits(self, message: Any) -> bool:
        """A response to a request whose waiter gave up (its task was cancelled).

        pygls would set the result of the cancelled future, raise InvalidStateError and report
        it as a server error; the answer is simply not needed any more.
        """
        msg_id = getattr(message, "id", None)
        if hasattr(message, "method") or not isinstance(msg_id, str | int):
            return False
        future = self._request_futures.get(msg_id)
        if future is None or not future.done():
            return False
        del self._request_futures[msg_id]
        log.debug("dropped the answer to %s: nobody waits for it any more", msg_id)
        return True

    def _fail_wait(self, msg_id: Any, method: str, exc: JsonRpcException) -> None:
        """Resolve the future awaiting the client's unreadable answer with an error."""
        cause = exc.__cause__
        why = "; ".join(transform_error(cause)) if isinstance(cause, BaseValidationError) else cause
        detail = f"the client's answer to {method} could not be read: {why or exc}"
        log.warning("%s", detail[:500])
        future = self._request_futures.pop(msg_id, None)
        if future is not None and not future.done():
            future.set_exception(JsonRpcInternalError(message=detail[:500]))

    def handle_message(self, message: Any) -> None:
        if isinstance(message, _Answered) or self._answer_nobody_awaits(message):
            return
        method = getattr(message, "method", None)
        msg_id = getattr(message, "id", None)
        if self._shutdown and method not in (None, EXIT) and msg_id is not None:
            # pygls drops requests after `shutdown`; JSON-RPC wants an answer.
            error = JsonRpcInvalidRequest(message=f"{method}: the server is shutting down")
            self._send_response(msg_id, error=error.to_response_error())
            return
        super().handle_message(message)
