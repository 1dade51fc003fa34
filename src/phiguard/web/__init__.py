"""The web application: app factory, middleware, and (later) console pages."""
