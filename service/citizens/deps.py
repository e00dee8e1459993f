from typing import Annotated

from fastapi import Depends, Request

from service.citizens.service import Registry


async def _registry(request: Request) -> Registry:
    # async: a sync dependency would take a thread of anyio\'s pool to read one attribute
    return request.app.state.registry


RegistryDep = Annotated[Registry, Depends(_registry)]
