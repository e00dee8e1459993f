from typing import Annotated

from fastapi import Depends, Request

from service.citizens.service import Registry


def _registry(request: Request) -> Registry:
    return request.app.state.registry


RegistryDep = Annotated[Registry, Depends(_registry)]
