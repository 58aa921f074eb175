"""The synthetic ExtremeWeather generator: determinism and physical sanity of its events."""
import numpy as np
import pytest

from engine.data.climate import generator as G
from engine.data.climate import physics as P

GRID = P.Grid(96, 144)


def tc(lat, lon=101.0, dp=40.0):
    return dict(cls=G.TC, lat=lat, lon=lon, dp_hpa=dp, r_phys_km=40.0,
                rmax_km=G.effective_rmax_km(40.0, GRID), b=1.6, dt500=4.0, dt200=6.0, dtmq=20.0,
                rain_mm_day=50.0)


def etc(lat, lon=201.0, jet=0.0):
    # jet 0: the tests look at the cyclonic circulation alone (the jet has its own test)
    return dict(cls=G.ETC, lat=lat, lon=lon, dp_hpa=25.0, r_phys_km=800.0,
                rmax_km=G.effective_rmax_km(800.0, GRID), b=1.2, dt500=-4.0, dt200=1.5,
                dts=3.0, dtmq=10.0, rain_mm_day=10.0, jet=jet, front_angle=0.0)


def centre_pixel(ev):
    row, col = GRID.to_pixel(ev["lat"], ev["lon"])
    return row, col


def distance_km(ev, i, j):
    x, y = GRID.local_km(ev["lat"], ev["lon"])
    return float(np.hypot(x[i, j], y[i, j]))


def test_same_seed_same_image_and_different_seed_differs():
    cfg = G.Config()
    a = G.generate_image(7, 0, 3, cfg)
    b = G.generate_image(7, 0, 3, cfg)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    c = G.generate_image(8, 0, 3, cfg)
    assert not np.array_equal(a[0], c[0])
    d = G.generate_image(7, 1, 3, cfg)  # another split is another stream
    assert not np.array_equal(a[0], d[0])


@pytest.mark.parametrize("make,lat", [(tc, 15.4), (tc, -18.3), (etc, 50.4), (etc, -55.2)])
def test_vortex_pressure_minimum_and_wind_maximum_where_documented(make, lat):
    ev = make(lat)
    a, _ = G.render_vortex(GRID, ev)
    row, col = centre_pixel(ev)
    i, j = np.unravel_index(np.argmin(a.psl), a.psl.shape)
    # the deepest cell is the one holding the centre (pixel i covers [i, i+1))
    assert (i, j) == (int(row), int(col))
    assert a.psl.min() < -0.9 * ev["dp_hpa"] * 100  # the grid samples close to the full deficit
    speed = np.hypot(a.u850, a.v850)
    rmw = P.radius_of_max_wind(ev["dp_hpa"] * 100, ev["rmax_km"], ev["b"], P.coriolis(lat))
    assert rmw <= ev["rmax_km"]  # Coriolis moves the peak inward, never outward
    k, m = np.unravel_index(np.argmax(speed), speed.shape)
    cell = max(GRID.dy_km, GRID.dx_km(lat))
    assert abs(distance_km(ev, k, m) - rmw) < cell
    # and the peak speed is the Holland gradient wind at that radius
    assert speed.max() == pytest.approx(P.holland_wind(rmw, ev["dp_hpa"] * 100, ev["rmax_km"],
                                                       ev["b"], P.coriolis(lat)), rel=0.05)


@pytest.mark.parametrize("lat", [15.4, -15.4, 50.4, -50.4])
def test_cyclones_turn_with_the_sign_of_f(lat):
    ev = (tc if abs(lat) < 30 else etc)(lat)
    a, _ = G.render_vortex(GRID, ev)
    i, j = (int(v) for v in centre_pixel(ev))
    d = 2  # two cells away
    s = np.sign(lat)
    # northern hemisphere: counter-clockwise, so northward wind east of the centre, southward
    # west of it, westward north of it; the south turns the other way
    assert s * a.v850[i, j + d] > 5 and s * a.v850[i, j - d] < -5
    assert s * a.u850[i + d, j] < -5 and s * a.u850[i - d, j] > 5
    # relative vorticity at the centre (centred differences, m/s per km) has the sign of f
    dx, dy = GRID.dx_km(GRID.lat[i]), GRID.dy_km
    zeta = ((a.v850[i, j + 1] - a.v850[i, j - 1]) / (2 * dx)
            - (a.u850[i + 1, j] - a.u850[i - 1, j]) / (2 * dy))
    assert np.sign(zeta) == s
    # surface winds: 0.8 of the gradient wind, turned inward (negative radial component)
    x, y = GRID.local_km(ev["lat"], ev["lon"])
    r = np.hypot(x, y)
    ring = (r > 0.8 * ev["rmax_km"]) & (r < 2.5 * ev["rmax_km"])
    radial = (a.ubot * x + a.vbot * y) / np.maximum(r, 1e-9)
    assert np.all(radial[ring] < 0)
    ratio = np.hypot(a.ubot, a.vbot)[ring] / np.hypot(a.u850, a.v850)[ring]
    np.testing.assert_allclose(ratio, P.SURFACE_WIND_FACTOR, rtol=1e-6)


def test_tropical_warm_core_and_extratropical_cold_core():
    a, _ = G.render_vortex(GRID, tc(15.0))
    i, j = (int(v) for v in centre_pixel(tc(15.0)))
    assert a.t500[i, j] > 3.0 and a.t200[i, j] > 5.0
    assert a.tmq[i, j] > 15.0 and a.prect[i, j] > 30 * P.MM_PER_DAY
    b, _ = G.render_vortex(GRID, etc(50.0))
    assert b.t500.min() < -3.0  # cold core aloft
    # tilted west with height: the coldest 500-hPa cell lies west of the surface centre
    k, m = np.unravel_index(np.argmin(b.t500), b.t500.shape)
    row, col = centre_pixel(etc(50.0))
    assert m < col
    # the strengthened westerly jet sits on the equatorward flank
    c, _ = G.render_vortex(GRID, etc(50.4, jet=8.0))
    d, _ = G.render_vortex(GRID, etc(50.4))
    i, j = (int(v) for v in centre_pixel(etc(50.4)))
    extra = c.u850 - d.u850
    assert extra.max() == pytest.approx(8.0, rel=0.1)
    assert np.unravel_index(np.argmax(extra), extra.shape)[0] < i


def test_noise_free_image_has_its_lows_at_the_documented_centres():
    cfg = G.Config(noise=0.0, rates=(0.0, 3.0, 0.0, 0.0))
    found = 0
    for index in range(4):
        img, boxes, events = G.generate_image(3, 0, index, cfg)
        psl = img[G.CHANNEL["PSL"]]
        for ev in events:
            row, col = centre_pixel(ev)
            i, j = int(row), int(col)
            window = psl[i - 2:i + 3, j - 2:j + 3]
            # the lowest of the 5x5 cells round the centre is the centre cell or a neighbour
            # (the climatological gradient may pull the sampled minimum over by one cell),
            # and the centre is lower than the whole ring two cells out
            k, m = np.unravel_index(np.argmin(window), window.shape)
            assert abs(k - 2) <= 1 and abs(m - 2) <= 1
            ring = np.ones((5, 5), bool)
            ring[1:4, 1:4] = False
            assert window[2, 2] < window[ring].min() - 0.2 * ev["dp_hpa"] * 100
            y0, x0, y1, x1 = ev["box"]
            assert y0 <= row < y1 and x0 <= col < x1
            found += 1
    assert found >= 4


def test_atmospheric_river_is_a_long_narrow_moist_filament():
    ev = dict(cls=G.AR, lat=22.0, lon=150.0, length_km=4000.0, width_km=500.0, angle_deg=40.0,
              bend=0.1, dtmq=20.0, jet=18.0, rain_mm_day=5.0)
    base = G.background(GRID, np.random.default_rng(0), 0.0)
    a, tube = G.render_river(GRID, ev)
    img = G.assemble(GRID, base, a)
    tmq = img[G.CHANNEL["TMQ"]]
    pts, tang, t = G.ar_curve(ev)
    x, y = GRID.local_km(ev["lat"], ev["lon"])
    core = (t > 0.2) & (t < 0.8)
    side = 1000.0  # km to either side of the axis
    normal = np.stack([-tang[:, 1], tang[:, 0]], axis=1)
    for p, nrm in zip(pts[core][::20], normal[core][::20]):
        def nearest(q):
            k = np.argmin((x - q[0]) ** 2 + (y - q[1]) ** 2)
            return np.unravel_index(k, x.shape)
        on = tmq[nearest(p)]
        # Ralph et al. (2004): IWV above 20 kg/m^2 along the river...
        assert on > 20.0
        # ...in a filament: 1000 km to either side is much drier
        assert on > tmq[nearest(p + side * nrm)] + 8 and on > tmq[nearest(p - side * nrm)] + 8
    assert ev["length_km"] > 2000 and ev["width_km"] < 1000
    # the low-level jet blows along the filament, poleward-eastward here
    axis = tube > 0.9
    k = np.argmin((x[..., None] - pts[None, None, :, 0]) ** 2
                  + (y[..., None] - pts[None, None, :, 1]) ** 2, axis=-1)
    along = a.u850 * tang[k, 0] + a.v850 * tang[k, 1]
    assert np.all(along[axis] > 0.8 * ev["jet"])
    assert np.all(a.v850[axis] > 0)  # northern hemisphere: poleward


def test_generated_boxes_are_valid_and_events_where_they_belong():
    cfg = G.Config()
    seen = set()
    for index in range(12):
        img, boxes, events = G.generate_image(11, 0, index, cfg)
        assert img.shape == (16, 96, 144) and img.dtype == np.float32
        assert np.all(np.isfinite(img))
        real = boxes[boxes[:, 4] >= 0]
        assert len(real) == len(events) <= G.MAX_BOXES
        assert np.all(boxes[len(events):] == -1)
        assert np.all(real[:, 0] >= 0) and np.all(real[:, 2] <= 96)
        assert np.all(real[:, 1] >= 0) and np.all(real[:, 3] <= 144)
        assert np.all(real[:, 2] > real[:, 0]) and np.all(real[:, 3] > real[:, 1])
        for ev, box in zip(events, real):
            assert ev["cls"] == int(box[4])
            seen.add(ev["cls"])
            lat = abs(ev["lat"])
            if ev["cls"] in (G.TD, G.TC):
                assert 5.0 <= lat <= 30.0
                across_km = (box[2] - box[0]) * GRID.dy_km
                assert 1000.0 < across_km < 3500.0  # ExtremeWeather's TC boxes: ~1600 km
            elif ev["cls"] == G.ETC:
                assert 35.0 <= lat <= 65.0
            else:
                assert 15.0 <= lat <= 28.0
    assert seen == {0, 1, 2, 3}


def test_climatology_is_physically_ordered():
    img, _, _ = G.generate_image(1, 0, 0, G.Config(noise=0.0, rates=(0, 0, 0, 0)))
    zonal = img.mean(axis=2)
    eq, mid, pole = 48, 48 + 24, 95  # ~0.9N, ~46N, ~89N
    for name in ("TS", "TREFHT", "T500", "TMQ", "QREFHT", "Z200"):
        v = zonal[G.CHANNEL[name]]
        assert v[eq] > v[mid] > v[pole], name
    u = zonal[G.CHANNEL["U850"]]
    assert u[48 + 7] < -5 and u[48 + 24] > 8  # trades near 14N, westerlies near 46N
    psl = zonal[G.CHANNEL["PSL"]] / 100
    assert 1005 < psl[eq] < 1015 and psl[48 + 17] > 1015 and psl[48 + 33] < 1002
    z1000 = zonal[G.CHANNEL["Z1000"]]
    np.testing.assert_allclose(z1000, P.RD * zonal[G.CHANNEL["TREFHT"]] / P.G
                               * np.log(psl / 1000.0), rtol=0.02, atol=2.0)
    assert np.all((zonal[G.CHANNEL["ZBOT"]] > 50) & (zonal[G.CHANNEL["ZBOT"]] < 70))


def test_noise_is_spatially_correlated_with_unit_variance():
    f = P.smooth_noise(np.random.default_rng(0), GRID, 900.0, 16)
    assert f.std() == pytest.approx(1.0, abs=0.15)
    # neighbours are strongly correlated, fields 20 cells apart are not
    near = np.corrcoef(f[:, :, :-1].ravel(), f[:, :, 1:].ravel())[0, 1]
    far = np.corrcoef(f[:, :, :-20].ravel(), f[:, :, 20:].ravel())[0, 1]
    assert near > 0.8 and abs(far) < 0.2
