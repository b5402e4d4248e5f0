"""(placeholder: routes arrive with their issue)"""

from fastapi import APIRouter

router = APIRouter()
