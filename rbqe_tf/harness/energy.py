"""Battery energy used during a run, from Linux/Android power-supply counters.

Reads ``ROOT/*/`` (default ``/sys/class/power_supply``) of every supply whose
``type`` is ``Battery``, in order of preference:

1. ``energy_now`` (µWh): ΔE directly;
2. ``charge_counter`` (µAh, Android) × the mean of ``voltage_now`` (µV) at start and end;
3. ``current_now`` (µA) × ``voltage_now`` (µV) sampled every ``interval`` seconds on a
   background thread and integrated over time.

Counters update slowly (seconds to a minute) and include everything else the device
does, so measure long runs on an idle device with the screen off; a supply that is
charging, or counters that did not move, give "not available". Signs differ between
kernels (discharge current is negative on many phones), so magnitudes are used.
"""
import os
import threading
import time

DEFAULT_ROOT = "/sys/class/power_supply"
_MICRO = 1e-6
_HOUR = 3600.0


def _read(folder, name):
    try:
        with open(os.path.join(folder, name)) as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        return float(text) if name.endswith(("_now", "_counter")) else text
    except ValueError:
        return None


def batteries(root=DEFAULT_ROOT):
    """Folders of the battery supplies under ``root`` (sorted); [] where there is none."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    return [os.path.join(root, n) for n in names
            if _read(os.path.join(root, n), "type") == "Battery"]


def _snapshot(folder):
    return {name: _read(folder, name) for name in
            ("energy_now", "charge_counter", "current_now", "voltage_now", "status")}


class EnergyMeter:
    """``start()`` … ``stop()`` → ``{"joules": J or None, "method": …, "reason": …}``."""

    def __init__(self, root=DEFAULT_ROOT, interval=0.5, clock=time.monotonic):
        found = batteries(root)
        self.folder = found[0] if found else None
        self.root, self.interval, self.clock = root, interval, clock
        self._samples, self._stop, self._thread, self._start = [], threading.Event(), None, None

    def sample(self):
        """Records (time, current µA, voltage µV) for the current × voltage method."""
        snap = _snapshot(self.folder)
        if snap["current_now"] is not None and snap["voltage_now"] is not None:
            self._samples.append((self.clock(), abs(snap["current_now"]), snap["voltage_now"]))

    def _poll(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self, background=True):
        """Snapshots the counters (and starts sampling current × voltage if ``background``)."""
        if self.folder is None:
            return
        self._start, self._samples = _snapshot(self.folder), []
        self.sample()
        if background:
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def stop(self):
        if self.folder is None:
            return {"joules": None, "method": None,
                    "reason": f"no battery under {self.root}"}
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.sample()
        start, end = self._start, _snapshot(self.folder)
        base = {"supply": os.path.basename(self.folder)}
        if "Charging" in (start["status"], end["status"]):
            return {**base, "joules": None, "method": None,
                    "reason": "the battery was charging (unplug the device)"}
        if start["energy_now"] is not None and end["energy_now"] is not None:
            joules = abs(start["energy_now"] - end["energy_now"]) * _MICRO * _HOUR
            return self._result(base, joules, "energy_now")
        if (start["charge_counter"] is not None and end["charge_counter"] is not None
                and start["voltage_now"] is not None and end["voltage_now"] is not None):
            volts = (start["voltage_now"] + end["voltage_now"]) / 2 * _MICRO
            coulombs = abs(start["charge_counter"] - end["charge_counter"]) * _MICRO * _HOUR
            return self._result(base, coulombs * volts, "charge_counter x voltage_now")
        if len(self._samples) >= 2:
            joules = sum((t1 - t0) * (i0 * v0 + i1 * v1) / 2 * _MICRO * _MICRO
                         for (t0, i0, v0), (t1, i1, v1) in zip(self._samples, self._samples[1:]))
            return self._result(base, joules, "current_now x voltage_now")
        return {**base, "joules": None, "method": None,
                "reason": "the battery reports no energy, charge or current counters"}

    @staticmethod
    def _result(base, joules, method):
        if joules <= 0:
            return {**base, "joules": None, "method": method,
                    "reason": f"{method} did not change during the run (run longer)"}
        return {**base, "joules": joules, "method": method, "reason": None}
