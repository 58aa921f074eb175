"""Synthetic ExtremeWeather images: 16 CAM5 variables on a global grid with labelled extreme events.

One image = a zonal-mean climatology (engine.data.climate.physics) + spatially correlated noise +
events, with the variables tied together by physics rather than drawn independently:

- Tropical depressions (class 0) and tropical cyclones (class 1): Holland (1980) vortices in the
  tropics (TD 5-25 degrees, TC 8-30 degrees, either hemisphere, two thirds in the north).
  PSL/PS drop by dp (TD 3-7 hPa, Holland gradient wind ~10-17 m/s; TC 15-60 hPa, ~30-60 m/s);
  U850/V850 carry the gradient wind, rotating counter-clockwise in the northern hemisphere and
  clockwise in the southern one (the sign of f); UBOT/VBOT are 0.8 of it turned 20 degrees
  inward; a warm core in T500/T200 (TC +2-6 / +3-8 K); moist columns in TMQ and QREFHT; heavy
  precipitation in PRECT (TC 30-80 mm/day grid mean).
- Extratropical cyclones (class 2): broad Holland lows (dp 12-35 hPa, Rmax 600-1100 km) at 35-65
  degrees with a cold core aloft displaced westward (the upper trough tilts west with height), a
  warm sector east and equatorward and cold air west at the surface, a frontal moisture band
  (warm conveyor belt) trailing equatorward, rain on it, and a strengthened westerly jet on the
  equatorward flank.
- Atmospheric rivers (class 3): filaments of precipitable water (Ralph et al. 2004: IWV > 20 kg/m^2
  along > 2000 km, < 1000 km wide): a Gaussian tube 300-700 km wide (FWHM) along a gently bent
  curve 2500-6000 km long, from the subtropics (15-28 degrees) poleward and eastward (SW to NE in
  the north, NW to SE in the south), with a low-level jet along the filament in U850/V850 (and
  weaker UBOT/VBOT), moist air in QREFHT, mild warmth and rain.

Grid resolution and storm size: a 2-degree grid cannot hold a 40-km eye. A model sees a storm
through its effective resolution of several grid lengths (Skamarock 2004, Mon. Wea. Rev. 132,
3019: ~7 dx for WRF), and climate models make their tropical cyclones as wide as the grid allows
(Walsh et al. 2007, J. Climate 20, 2307, on resolution-dependent TC detection). So the radius of
maximum wind used here is R_eff = sqrt(R_phys^2 + (2 dy)^2), with R_phys drawn from observed
ranges (TD 60-150 km, TC 20-60 km, ETC 600-1100 km): ~420 km for tropical storms on the default
96 x 144 grid, ~60-70 km on ExtremeWeather's 25-km grid (what CAM5 at 25 km produces).

Boxes (ymin, xmin, ymax, xmax, class; pixel units, max exclusive, rows south to north) enclose the
cells where the event's defining anomaly reaches 25 % of its peak: the pressure deficit for
vortices, the TMQ excess for rivers. With the radii above, TC boxes are ~1700-2500 km across,
like ExtremeWeather's (64 px x 25 km = 1600 km); ETC boxes ~3000-5000 km; AR boxes follow the
filament. Events are placed so that boxes do not cross the longitude seam (ExtremeWeather's boxes
cannot wrap either) and do not overlap much (IoU <= 0.2, centres >= 8 px apart), at most 15.

Determinism: image i of split s under seed S is drawn from numpy's Generator seeded with
SeedSequence([S, s, i]) alone, so any subset, order or number of workers gives the same images.
"""
import json

import numpy as np

from . import physics as P

VARIABLES = ("PRECT", "PS", "PSL", "QREFHT", "T200", "T500", "TMQ", "TREFHT", "TS", "U850",
             "UBOT", "V850", "VBOT", "Z1000", "Z200", "ZBOT")
UNITS = ("m/s", "Pa", "Pa", "kg/kg", "K", "K", "kg/m2", "K", "K", "m/s", "m/s", "m/s", "m/s",
         "m", "m", "m")
CHANNEL = {name: i for i, name in enumerate(VARIABLES)}
CLASSES = ("tropical_depression", "tropical_cyclone", "extratropical_cyclone",
           "atmospheric_river")
TD, TC, ETC, AR = range(4)
MAX_BOXES = 15
# Bumped whenever a change alters the images drawn for a seed (caches key on it).
GENERATOR_VERSION = 2
BOX_FRACTION = 0.25  # share of the peak anomaly that bounds an event's box


class Config:
    """Generation settings. `noise` scales every noise amplitude (0: a smooth climatology, for
    tests); `rates` are the mean events per image (Poisson) of TD, TC, ETC, AR."""

    def __init__(self, height=96, width=144, noise=1.0, rates=(0.8, 0.8, 1.2, 0.8),
                 min_separation_px=8.0, max_overlap=0.2):
        self.height, self.width = int(height), int(width)
        self.noise = float(noise)
        self.rates = tuple(float(r) for r in rates)
        if len(self.rates) != 4 or min(self.rates) < 0:
            raise ValueError(f"rates needs 4 non-negative means (TD, TC, ETC, AR), got {rates}")
        self.min_separation_px = float(min_separation_px)
        self.max_overlap = float(max_overlap)

    def to_dict(self):
        return dict(height=self.height, width=self.width, noise=self.noise, rates=self.rates,
                    min_separation_px=self.min_separation_px, max_overlap=self.max_overlap)

    def to_json(self):
        return json.dumps(self.to_dict(), sort_keys=True)


def _hemisphere(rng, north_share=2 / 3):
    return 1.0 if rng.uniform() < north_share else -1.0


def effective_rmax_km(r_phys_km, grid):
    return float(np.hypot(r_phys_km, 2.0 * grid.dy_km))


# -- event parameters ------------------------------------------------------------------------------

def sample_event(rng, cls, grid):
    """Random parameters of one event of class `cls` (a dict of plain floats, JSON-ready)."""
    if cls in (TD, TC):
        s = _hemisphere(rng)
        if cls == TD:
            lat = s * rng.uniform(5.0, 25.0)
            dp = rng.uniform(3.0, 7.0)
            r_phys, b = rng.uniform(60.0, 150.0), rng.uniform(1.0, 1.4)
            dt500, dt200 = rng.uniform(0.5, 2.0), rng.uniform(1.0, 3.0)
            dtmq, rain = rng.uniform(5.0, 12.0), rng.uniform(10.0, 30.0)
        else:
            lat = s * rng.uniform(8.0, 30.0)
            dp = rng.uniform(15.0, 60.0)
            r_phys, b = rng.uniform(20.0, 60.0), rng.uniform(1.3, 2.0)
            dt500, dt200 = rng.uniform(2.0, 6.0), rng.uniform(3.0, 8.0)
            dtmq, rain = rng.uniform(10.0, 25.0), rng.uniform(30.0, 80.0)
        return dict(cls=cls, lat=lat, lon=rng.uniform(0.0, 360.0), dp_hpa=dp, r_phys_km=r_phys,
                    rmax_km=effective_rmax_km(r_phys, grid), b=b, dt500=dt500, dt200=dt200,
                    dtmq=dtmq, rain_mm_day=rain)
    if cls == ETC:
        s = 1.0 if rng.uniform() < 0.5 else -1.0
        r_phys = rng.uniform(600.0, 1100.0)
        return dict(cls=cls, lat=s * rng.uniform(35.0, 65.0), lon=rng.uniform(0.0, 360.0),
                    dp_hpa=rng.uniform(12.0, 35.0), r_phys_km=r_phys,
                    rmax_km=effective_rmax_km(r_phys, grid), b=rng.uniform(1.0, 1.4),
                    dt500=-rng.uniform(2.0, 5.0), dt200=rng.uniform(1.0, 2.0),
                    dts=rng.uniform(2.0, 5.0), dtmq=rng.uniform(5.0, 15.0),
                    rain_mm_day=rng.uniform(5.0, 20.0), jet=rng.uniform(5.0, 10.0),
                    front_angle=rng.uniform(-20.0, 20.0))
    if cls == AR:
        s = 1.0 if rng.uniform() < 0.5 else -1.0
        return dict(cls=cls, lat=s * rng.uniform(15.0, 28.0), lon=rng.uniform(0.0, 360.0),
                    length_km=rng.uniform(2500.0, 6000.0), width_km=rng.uniform(300.0, 700.0),
                    angle_deg=rng.uniform(25.0, 60.0), bend=rng.uniform(-0.15, 0.15),
                    dtmq=rng.uniform(15.0, 25.0), jet=rng.uniform(12.0, 25.0),
                    rain_mm_day=rng.uniform(3.0, 10.0))
    raise ValueError(f"unknown event class {cls}")


# -- event fields ----------------------------------------------------------------------------------

class Anomalies:
    """Additive event anomalies, accumulated before the image is assembled."""
    NAMES = ("psl", "t500", "t200", "ts", "tmq", "rh", "prect", "u850", "v850", "ubot", "vbot")

    def __init__(self, grid):
        for name in self.NAMES:
            setattr(self, name, np.zeros((grid.height, grid.width)))

    def add(self, other):
        for name in self.NAMES:
            getattr(self, name)[...] += getattr(other, name)


def _gauss(d2_km2, width_km):
    return np.exp(-d2_km2 / (2.0 * width_km ** 2))


def vortex_geometry(grid, ev):
    """(x, y, r) in km of every cell from the event centre."""
    x, y = grid.local_km(ev["lat"], ev["lon"])
    return x, y, np.hypot(x, y)


def render_vortex(grid, ev):
    """Anomalies of a TD, TC or ETC (Holland low), and the footprint used for its box."""
    a = Anomalies(grid)
    x, y, r = vortex_geometry(grid, ev)
    dp = ev["dp_hpa"] * 100.0
    rm, b = ev["rmax_km"], ev["b"]
    f = P.coriolis(ev["lat"])
    sense = np.sign(ev["lat"])  # cyclonic: counter-clockwise north, clockwise south
    frac = P.holland_deficit_fraction(r, rm, b)
    a.psl -= dp * frac
    speed = P.holland_wind(r, dp, rm, b, f)
    theta = np.arctan2(y, x)
    # tangential unit vector of cyclonic rotation: sense * (-sin, cos)
    a.u850 += -sense * speed * np.sin(theta)
    a.v850 += sense * speed * np.cos(theta)
    alpha = np.radians(P.INFLOW_ANGLE_DEG)
    vs = P.SURFACE_WIND_FACTOR * speed
    # surface: the tangential wind turned inward by alpha (friction drives inflow)
    a.ubot += vs * (-np.sin(alpha) * np.cos(theta) - sense * np.cos(alpha) * np.sin(theta))
    a.vbot += vs * (-np.sin(alpha) * np.sin(theta) + sense * np.cos(alpha) * np.cos(theta))
    if ev["cls"] in (TD, TC):
        core = _gauss(r ** 2, 1.2 * rm)
        a.t500 += ev["dt500"] * core
        a.t200 += ev["dt200"] * core
        moist = _gauss(r ** 2, 2.0 * rm)
        a.tmq += ev["dtmq"] * moist
        a.rh += 0.12 * moist  # near-saturated boundary layer under the storm
        a.prect += ev["rain_mm_day"] * P.MM_PER_DAY * _gauss(r ** 2, 1.0 * rm)
        a.ts -= 0.5 * core  # rain-cooled air and the storm's cold wake, small
    else:
        # cold core aloft, displaced westward by ~0.5 Rmax (westward tilt with height)
        d2_up = (x + 0.5 * rm) ** 2 + y ** 2
        a.t500 += ev["dt500"] * _gauss(d2_up, rm)
        a.t200 += ev["dt200"] * _gauss(d2_up, rm)  # lowered tropopause: warm above the trough
        # warm sector east/equatorward, cold air west: an east-west surface temperature dipole
        a.ts += ev["dts"] * np.tanh(x / rm) * _gauss(r ** 2, 1.5 * rm)
        # frontal moisture band trailing equatorward from east of the centre
        s = np.sign(ev["lat"])
        ang = np.radians(ev["front_angle"])
        # band axis direction: toward the equator, tilted by front_angle
        ax, ay = np.sin(ang), -s * np.cos(ang)
        x0, y0 = x - 0.6 * rm, y  # the band starts east of the centre
        along = x0 * ax + y0 * ay
        across = -x0 * ay + y0 * ax
        band = _gauss(across ** 2, 0.35 * rm) * _gauss(np.clip(along, None, 0) ** 2, 0.3 * rm) \
            * _gauss(np.clip(along - 1.5 * rm, 0, None) ** 2, 0.5 * rm)
        a.tmq += ev["dtmq"] * band
        a.rh += 0.1 * band
        a.prect += ev["rain_mm_day"] * P.MM_PER_DAY * np.maximum(band, _gauss(r ** 2, 0.7 * rm))
        # strengthened westerlies on the equatorward flank
        jet = ev["jet"] * _gauss(x ** 2, 1.5 * rm) * _gauss((y + s * rm) ** 2, 0.6 * rm)
        a.u850 += jet
        a.ubot += 0.6 * jet
    return a, frac


def ar_curve(ev, n=240):
    """Points (x, y) in km of the river's axis relative to its start, and the unit tangents: a
    quadratic Bezier curve from the start, heading `angle_deg` poleward of east, bent sideways by
    `bend` times its length."""
    s = np.sign(ev["lat"])
    L = ev["length_km"]
    ang = np.radians(ev["angle_deg"])
    p0 = np.array([0.0, 0.0])
    p2 = L * np.array([np.cos(ang), s * np.sin(ang)])
    normal = np.array([-p2[1], p2[0]]) / L
    p1 = 0.5 * p2 + ev["bend"] * L * normal
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    tang = 2 * (1 - t) * (p1 - p0) + 2 * t * (p2 - p1)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    return pts, tang, t[:, 0]


def render_river(grid, ev):
    a = Anomalies(grid)
    x, y = grid.local_km(ev["lat"], ev["lon"])
    pts, tang, t = ar_curve(ev)
    sigma = ev["width_km"] / 2.3548  # FWHM -> standard deviation
    # only cells within 4 sigma of the axis's bounding box can feel the river
    reach = 4.0 * 1.2 * sigma
    near = ((x > pts[:, 0].min() - reach) & (x < pts[:, 0].max() + reach)
            & (y > pts[:, 1].min() - reach) & (y < pts[:, 1].max() + reach))
    xs, ys = x[near], y[near]
    d2 = (xs[:, None] - pts[None, :, 0]) ** 2 + (ys[:, None] - pts[None, :, 1]) ** 2
    k_near = np.argmin(d2, axis=1)
    dist2 = np.full(x.shape, np.inf)
    dist2[near] = d2[np.arange(len(k_near)), k_near]
    k = np.zeros(x.shape, np.int64)
    k[near] = k_near
    tk = t[k]
    # smooth fade-in/out over the first and last 15 % of the length
    ramp = np.clip(np.minimum(tk, 1 - tk) / 0.15, 0, 1)
    along = ramp ** 2 * (3 - 2 * ramp)
    tube = _gauss(dist2, sigma) * along
    a.tmq += ev["dtmq"] * tube
    a.rh += 0.08 * tube
    jet = ev["jet"] * _gauss(dist2, 1.2 * sigma) * along
    tx, ty = tang[k, 0], tang[k, 1]
    a.u850 += jet * tx
    a.v850 += jet * ty
    a.ubot += 0.6 * jet * tx
    a.vbot += 0.6 * jet * ty
    a.ts += 1.5 * tube
    a.prect += ev["rain_mm_day"] * P.MM_PER_DAY * tube
    return a, tube


def render_event(grid, ev):
    """(anomalies, footprint): footprint is the event's defining anomaly as a share of its peak."""
    if ev["cls"] == AR:
        return render_river(grid, ev)
    return render_vortex(grid, ev)


def footprint_box(footprint, fraction=BOX_FRACTION):
    """(ymin, xmin, ymax, xmax) of the cells where footprint >= fraction * max, or None when the
    region touches both the first and the last column (it wraps round the longitude seam)."""
    mask = footprint >= fraction * footprint.max()
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    if cols[0] == 0 and cols[-1] == footprint.shape[1] - 1:
        return None
    return (float(rows[0]), float(cols[0]), float(rows[-1] + 1), float(cols[-1] + 1))


def _iou(a, b):
    ih = min(a[2], b[2]) - max(a[0], b[0])
    iw = min(a[3], b[3]) - max(a[1], b[1])
    if ih <= 0 or iw <= 0:
        return 0.0
    inter = ih * iw
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def place_events(rng, grid, config, tries=30):
    """Events of one image with their boxes and anomalies: [(params, box, anomalies)]."""
    counts = [int(rng.poisson(rate)) for rate in config.rates]
    order = [c for c, n in enumerate(counts) for _ in range(n)]
    rng.shuffle(order)
    placed = []
    for cls in order[:MAX_BOXES]:
        for _ in range(tries):
            ev = sample_event(rng, cls, grid)
            anomalies, footprint = render_event(grid, ev)
            box = footprint_box(footprint)
            if box is None:
                continue
            cy, cx = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            clash = any(_iou(box, other) > config.max_overlap
                        or np.hypot(cy - (other[0] + other[2]) / 2,
                                    cx - (other[1] + other[3]) / 2) < config.min_separation_px
                        for _, other, _ in placed)
            if not clash:
                placed.append((ev, box, anomalies))
                break
    return placed


# -- assembling an image ---------------------------------------------------------------------------

def storm_track(lat, tropics, midlatitudes):
    """A noise amplitude growing from its tropical value to its mid-latitude peak near 50
    degrees: day-to-day weather is far stronger in the storm tracks than in the tropics (the
    standard deviation of daily sea-level pressure is ~2 hPa near the equator and ~8-12 hPa in
    the winter storm tracks; Blackmon et al. 1977, J. Atmos. Sci. 34, 1040; ERA-Interim)."""
    return tropics + (midlatitudes - tropics) * np.exp(-((np.abs(lat) - 50.0) / 18.0) ** 2)


def geostrophic_wind(grid, p):
    """(u, v) in balance with a pressure perturbation p (Pa): u = -dp/dy / (rho f),
    v = dp/dx / (rho f). f is held at its 20-degree value closer to the equator (balance fails
    there) and the result fades out inside ~15 degrees, where the pressure noise is weak anyway."""
    lat = grid.lat2d
    f = P.coriolis(np.where(np.abs(lat) < 20.0, np.sign(lat + 1e-9) * 20.0, lat))
    rho = 1.2  # kg m^-3, near-surface air
    dpdy = np.gradient(p, grid.dy_km * 1e3, axis=0)
    dpdx = (np.roll(p, -1, axis=1) - np.roll(p, 1, axis=1)) / (2e3 * grid.dx_km(lat))
    fade = 1.0 - np.exp(-(lat / 15.0) ** 2)
    return -dpdy / (rho * f) * fade, dpdx / (rho * f) * fade


def background(grid, rng, noise):
    """Climatology + correlated noise, before events: a dict of base fields.

    Synoptic noise (~900 km) in pressure, with winds in geostrophic balance with it outside the
    tropics (so the background holds ordinary, unlabelled lows and highs that turn the right way,
    as real weather does), plus its own unbalanced part; mesoscale noise (~500 km) in
    temperature, moisture and rain. Amplitudes follow storm_track()."""
    lat = grid.lat2d
    z = P.smooth_noise(rng, grid, 900.0, 3) * noise       # synoptic scale: pressure, winds
    m = P.smooth_noise(rng, grid, 500.0, 8) * noise       # mesoscale: temperature, moisture, rain
    p_noise = 100.0 * storm_track(lat, 1.5, 8.0) * z[0]   # hPa -> Pa
    ug, vg = geostrophic_wind(grid, p_noise)
    unbalanced = storm_track(lat, 2.0, 2.5)
    return dict(
        psl=P.clim_psl(lat) + p_noise,
        ts=P.clim_ts(lat) + storm_track(lat, 1.0, 3.0) * m[0],
        t500=P.clim_t500(lat) + storm_track(lat, 0.7, 2.0) * m[1],
        t200=P.clim_t200(lat) + storm_track(lat, 0.5, 1.5) * m[2],
        tmq_factor=np.exp(0.12 * m[3]),                     # ~12 % moisture fluctuations
        rh=0.78 + 0.05 * m[4],
        prect_factor=np.exp(0.8 * m[5] - 0.32),             # lognormal, mean 1: patchy rain
        u850=P.clim_u850(lat) + ug + unbalanced * z[1],
        v850=P.clim_v850(lat) + vg + unbalanced * z[2],
        ubot_noise=0.5 * m[6], vbot_noise=0.5 * m[7],
    )


def assemble(grid, base, anomalies):
    """The 16 channels (float32, ExtremeWeather order) from base fields and event anomalies.
    Derived variables keep the fields consistent: PS from PSL (an aquaplanet has no orography),
    QREFHT from relative humidity at TREFHT, TMQ from TS, Z1000/ZBOT/Z200 hypsometrically."""
    lat = grid.lat2d
    psl = base["psl"] + anomalies.psl
    ps = psl.copy()
    ts = base["ts"] + anomalies.ts
    trefht = ts - 1.0  # air ~1 K cooler than the sea surface
    t500 = base["t500"] + anomalies.t500
    t200 = base["t200"] + anomalies.t200
    rh = np.clip(base["rh"] + anomalies.rh, 0.2, 1.0)
    qrefht = P.specific_humidity(rh, trefht, ps)
    # climatological TMQ follows the undisturbed surface temperature; noise is multiplicative
    tmq = P.tmq_from_ts(P.clim_ts(lat) + 0.5 * (ts - P.clim_ts(lat))) * base["tmq_factor"] \
        + anomalies.tmq
    prect = P.clim_prect(lat) * base["prect_factor"] + anomalies.prect
    u850 = base["u850"] + anomalies.u850
    v850 = base["v850"] + anomalies.v850
    # background surface winds: ~0.7 of 850 hPa (boundary-layer drag), plus their own noise
    ubot = 0.7 * (base["u850"]) + base["ubot_noise"] + anomalies.ubot
    vbot = 0.7 * (base["v850"]) + base["vbot_noise"] + anomalies.vbot
    z1000 = P.height_of_pressure(psl, trefht, 1.0e5)
    t_layer = (trefht + 2.0 * t500 + t200) / 4.0  # log-pressure weighted 1000-200 hPa mean
    z200 = z1000 + P.height_of_pressure(1.0e5, t_layer, 2.0e4)
    zbot = P.height_of_pressure(1.0, trefht, P.SIGMA_BOTTOM)
    fields = dict(PRECT=prect, PS=ps, PSL=psl, QREFHT=qrefht, T200=t200, T500=t500, TMQ=tmq,
                  TREFHT=trefht, TS=ts, U850=u850, UBOT=ubot, V850=v850, VBOT=vbot, Z1000=z1000,
                  Z200=z200, ZBOT=zbot)
    return np.stack([fields[v] for v in VARIABLES]).astype(np.float32)


def image_rng(seed, split_id, index):
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(split_id), int(index)]))


def generate_image(seed, split_id, index, config, grid=None):
    """One image: (images (16,H,W) float32, boxes (15,5) float32 padded with -1, events list)."""
    grid = grid or P.Grid(config.height, config.width)
    rng = image_rng(seed, split_id, index)
    base = background(grid, rng, config.noise)
    placed = place_events(rng, grid, config)
    total = Anomalies(grid)
    boxes = -np.ones((MAX_BOXES, 5), np.float32)
    events = []
    for k, (ev, box, anomalies) in enumerate(placed):
        total.add(anomalies)
        boxes[k] = (*box, ev["cls"])
        if ev["cls"] != AR:
            ev = dict(ev, rmw_km=P.radius_of_max_wind(ev["dp_hpa"] * 100, ev["rmax_km"], ev["b"],
                                                       P.coriolis(ev["lat"])))
        events.append(dict(ev, box=list(box)))
    return assemble(grid, base, total), boxes, events
