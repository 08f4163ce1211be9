"""Delivery channels behind one protocol (:mod:`csops.messaging.channels.base`)."""
