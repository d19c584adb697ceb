"""Shared analysers: networks that several capabilities use by name, declared once (one network
per function: the one face detector serves every face feature, the one NSFW classifier both its
tab and the public-link gate). Each analyser in ANALYSERS has specs() and unavailable_reason();
face_boxes is the detector's box arithmetic."""
from . import face_detector, face_emotion, face_identity, nsfw

ANALYSERS = [face_detector, face_emotion, face_identity, nsfw]
