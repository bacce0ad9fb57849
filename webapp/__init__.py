"""The platform's own web pages: dashboards, image browser and viewer, models,
active learning, feedback, quick read and the radiologist's home.

Server-rendered Django templates with a little JavaScript; plots draw from the
platform's REST API; every asset is served by the platform itself.
"""
