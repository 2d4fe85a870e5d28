"""What ``kopf run`` loads in the tests: the production handlers, registered as the CLI does."""

from teegate.k8s.operator.handlers import register_handlers

register_handlers()
