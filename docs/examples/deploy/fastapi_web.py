"""myapp/web.py: a FastAPI app that inserts jobs; run with `uvicorn myapp.web:api`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from myapp.jobs import app as jobs  # opens the store: owner or client, whichever comes first
from myapp.jobs import send_email


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    # On shutdown: commit what is pending and let go of the store (or of the owner's socket).
    jobs.close()


api = FastAPI(lifespan=lifespan)


# A plain `def`: FastAPI runs it in its thread pool, so the insert's wait for the disk does
# not block the event loop.
@api.post("/signup")
def signup(email: str) -> dict[str, int]:
    job = send_email.insert({"to": email})
    return {"job": job.id}
