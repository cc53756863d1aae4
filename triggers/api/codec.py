"""The codec endpoint: Temporal's codec-server protocol, so the Temporal Web UI and the `temporal`
CLI can show decrypted payloads to operators who hold an API key. `POST /codec/decode` and
`POST /codec/encode` take and give `{"payloads": [{"metadata": {...}, "data": "..."}]}` (the
protobuf JSON of `temporal.api.common.v1.Payloads`, bytes in base64)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from google.protobuf.json_format import MessageToDict, Parse, ParseError
from temporalio.api.common.v1 import Payloads

from core.access import Permission
from core.encryption import EncryptionKeyError
from triggers.api.deps import Context, Problem, allowed

# Encoding too: it would let a key seal payloads the workers then trust.
router = APIRouter(prefix="/codec", dependencies=[Depends(allowed(Permission.DECODE_PAYLOADS))], tags=["codec"])

_RESPONSES = {401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem}, 422: {"model": Problem}}


async def _payloads(request: Request) -> Payloads | JSONResponse:
    body = await request.body()
    try:
        return Parse(body or b"{}", Payloads())
    except (ParseError, UnicodeDecodeError) as err:
        return JSONResponse({"detail": f"not a Payloads JSON document: {err}"}, status_code=422)


async def _apply(request: Request, api, decode: bool) -> JSONResponse:
    if api.codec is None:
        return JSONResponse({"detail": "payload encryption is not configured"}, status_code=404)
    parsed = await _payloads(request)
    if isinstance(parsed, JSONResponse):
        return parsed
    try:
        done = await (api.codec.decode if decode else api.codec.encode)(parsed.payloads)
    except (EncryptionKeyError, ValueError) as err:
        return JSONResponse({"detail": str(err)}, status_code=422)
    except Exception as err:  # a payload sealed with another key of the same id: cannot be opened
        return JSONResponse({"detail": f"cannot decrypt: {type(err).__name__}"}, status_code=422)
    return JSONResponse(MessageToDict(Payloads(payloads=done)))


@router.post("/decode", responses=_RESPONSES, summary="Decrypt payloads (Temporal's codec-server protocol)")
async def decode(request: Request, api: Context) -> JSONResponse:
    return await _apply(request, api, decode=True)


@router.post("/encode", responses=_RESPONSES, summary="Encrypt payloads (Temporal's codec-server protocol)")
async def encode(request: Request, api: Context) -> JSONResponse:
    return await _apply(request, api, decode=False)
