from flask import Blueprint
openapi_api = Blueprint("openapi", __name__)
