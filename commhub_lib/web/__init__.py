"""The dashboard: a static single page (plain HTML/CSS/JS, no build step) and the routes serving it."""
