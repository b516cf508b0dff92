"""The API's resources; each module exports `resources`, a list of endpoints.Resource."""
