"""Polling helper shared by the tests that wait on other processes or threads (DDS, servers)."""
import time


def wait_for(predicate, timeout=10.0, poll=0.02):
    """Poll ``predicate`` until it is truthy or ``timeout`` s pass; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(poll)
    return predicate()
