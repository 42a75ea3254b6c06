"""Developer tools: the media protocol client
(``python -m callcenter.tools.client``) and the demo call of the main command
(``demo``)."""
