"""OpenAPI descriptions for endpoints that parse their own request body (streamed uploads)."""


def multipart_upload_body(file_description: str) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "name"],
                        "properties": {
                            "file": {"type": "string", "format": "binary", "description": file_description},
                            "name": {"type": "string", "maxLength": 200, "description": "A human-readable name."},
                        },
                    }
                }
            },
        }
    }
