"""Physics of the synthetic ExtremeWeather fields: constants, the grid, a zonal-mean climatology,
correlated noise, the Holland (1980) vortex and thermodynamic relations. Everything in SI units
unless a name says otherwise (``_km``, ``_hpa``, ``_deg``).

Sources of the constants and formulas:
- Earth radius 6371 km (IUGG mean radius), rotation rate 7.2921e-5 s^-1 (IERS), standard gravity
  9.80665 m s^-2 (CGPM 1901), dry-air gas constant 287.04 J kg^-1 K^-1 and eps = Rd/Rv = 0.622
  (Wallace & Hobbs, Atmospheric Science, 2nd ed., 2006, ch. 3).
- Saturation vapour pressure over water: Bolton (1980), Mon. Wea. Rev. 108, 1046, eq. 10.
- Hypsometric equation z2 - z1 = (Rd Tbar / g) ln(p1 / p2) (Wallace & Hobbs, eq. 3.29).
- Holland (1980), Mon. Wea. Rev. 108, 1212: p(r) = pc + dp exp(-(Rmax/r)^B) and the gradient
  wind V(r) = sqrt(B dp/rho (Rmax/r)^B exp(-(Rmax/r)^B) + (r f / 2)^2) - r f / 2; air density
  1.15 kg m^-3 as in Holland's paper.
- Surface wind reduction ~0.8 of the gradient-level wind over the ocean (Franklin, Black &
  Valde 2003, Wea. Forecasting 18, 32) and a ~20 degree inflow angle (Zhang & Uhlhorn 2012,
  J. Appl. Meteor. Climatol. 51, 2207, mean ~22 degrees).
- Zonal means (sea-level pressure belts, trades and westerlies, temperature and precipitable
  water falling poleward): rounded from Peixoto & Oort, Physics of Climate (1992), ch. 7 and 12,
  and the ERA-Interim annual means; they are smooth fits, not data.
"""
import numpy as np

EARTH_RADIUS_KM = 6371.0
OMEGA = 7.2921e-5          # s^-1
G = 9.80665                # m s^-2
RD = 287.04                # J kg^-1 K^-1
EPS = 0.622                # Rd / Rv
RHO_AIR = 1.15             # kg m^-3, Holland (1980)
KM_PER_DEG = np.pi * EARTH_RADIUS_KM / 180.0
SURFACE_WIND_FACTOR = 0.8  # Franklin et al. 2003
INFLOW_ANGLE_DEG = 20.0    # Zhang & Uhlhorn 2012
# CAM5's lowest model level sits near sigma = 0.9925 (~992.5 hPa over a 1000-hPa surface), about
# 60 m up: ZBOT is that level's height above the surface.
SIGMA_BOTTOM = 0.9925
MM_PER_DAY = 1e-3 / 86400.0  # CAM5's PRECT is in m s^-1


class Grid:
    """A global latitude-longitude grid of cell centres, as the CAM5 fields of ExtremeWeather.

    Rows run from south to north (CAM's ascending latitude), columns eastward from 0 degrees.
    ExtremeWeather's grid is 768 x 1152 (0.234 x 0.3125 degrees, ~25 km); the default 96 x 144
    is that grid coarsened 8 times in each direction (1.875 x 2.5 degrees, the size of CESM's
    "f19" grid), so ExtremeWeather's 64-pixel YOLO cells become 8-pixel cells here.
    """

    def __init__(self, height=96, width=144):
        if height < 8 or width < 8:
            raise ValueError(f"grid {height}x{width} is too small (at least 8x8)")
        self.height, self.width = int(height), int(width)
        self.dlat = 180.0 / self.height
        self.dlon = 360.0 / self.width
        self.lat = -90.0 + (np.arange(self.height) + 0.5) * self.dlat
        self.lon = (np.arange(self.width) + 0.5) * self.dlon
        self.lat2d, self.lon2d = np.meshgrid(self.lat, self.lon, indexing="ij")
        self.dy_km = self.dlat * KM_PER_DEG

    def dx_km(self, lat):
        return self.dlon * KM_PER_DEG * np.cos(np.radians(lat))

    def to_pixel(self, lat, lon):
        """Continuous (row, col) of a point: pixel i covers [i, i+1), its centre is i + 0.5."""
        return (lat + 90.0) / self.dlat, (lon % 360.0) / self.dlon

    def local_km(self, lat0, lon0):
        """East (x) and north (y) distances in km of every cell from (lat0, lon0) on the local
        tangent plane: y along the meridian, x along each cell's own parallel (cos of the cell's
        latitude), longitude wrapped to the shorter way round."""
        dlon = (self.lon2d - lon0 + 180.0) % 360.0 - 180.0
        x = dlon * KM_PER_DEG * np.cos(np.radians(self.lat2d))
        y = (self.lat2d - lat0) * KM_PER_DEG
        return x, y

    def __repr__(self):
        return f"Grid({self.height}x{self.width}, {self.dlat:g} x {self.dlon:g} deg)"


def coriolis(lat_deg):
    return 2.0 * OMEGA * np.sin(np.radians(lat_deg))


# -- climatology (zonal means, functions of latitude in degrees) ----------------------------------

def clim_psl(lat):
    """Sea-level pressure (Pa): equatorial trough ~1011 hPa, subtropical highs ~1019 hPa near 32
    degrees, subpolar lows ~999 hPa near 62 degrees."""
    a = np.abs(lat)
    hpa = 1011.0 + 8.0 * np.exp(-((a - 32.0) / 10.0) ** 2) - 14.0 * np.exp(-((a - 62.0) / 8.0) ** 2)
    return hpa * 100.0


def clim_ts(lat):
    """Surface temperature (K): ~300 K at the equator to ~252 K at the poles (annual mean)."""
    return 300.0 - 48.0 * np.sin(np.radians(lat)) ** 2


def clim_t500(lat):
    """500-hPa temperature (K): ~268 K in the tropics, ~238 K over the poles."""
    return 268.0 - 30.0 * np.sin(np.radians(lat)) ** 2


def clim_t200(lat):
    """200-hPa temperature (K): nearly flat, ~218 K (tropical upper troposphere and the
    extratropical lower stratosphere have similar temperatures at this level)."""
    return 218.0 - 4.0 * np.sin(np.radians(lat)) ** 2 + 2.0 * np.sin(np.radians(2 * lat)) ** 2


def clim_u850(lat):
    """850-hPa zonal wind (m/s): trade easterlies ~-8 near 12 degrees, westerlies ~+12 near 45."""
    a = np.abs(lat)
    return -8.0 * np.exp(-((a - 12.0) / 10.0) ** 2) + 12.0 * np.exp(-((a - 45.0) / 12.0) ** 2)


def clim_v850(lat):
    """850-hPa meridional wind (m/s): the Hadley cell's equatorward low-level branch (~1.5 m/s)."""
    return -np.sign(lat) * 1.5 * np.exp(-((np.abs(lat) - 15.0) / 10.0) ** 2)


def clim_prect(lat):
    """Precipitation rate (m/s): ITCZ ~6 mm/day near 6N, dry subtropics ~1 mm/day, storm tracks
    ~3 mm/day near 45 degrees."""
    mm = (0.8 + 5.5 * np.exp(-((lat - 6.0) / 7.0) ** 2)
          + 2.5 * np.exp(-((np.abs(lat) - 45.0) / 12.0) ** 2))
    return mm * MM_PER_DAY


def tmq_from_ts(ts):
    """Precipitable water (kg/m^2) from surface temperature: ~48 kg/m^2 at 300 K, growing ~6 %
    per kelvin (close to Clausius-Clapeyron's ~7 %/K at fixed relative humidity)."""
    return 48.0 * np.exp(0.06 * (ts - 300.0))


def saturation_vapour_pressure(t):
    """Bolton (1980): e_s = 6.112 exp(17.67 Tc / (Tc + 243.5)) hPa, returned in Pa."""
    tc = t - 273.15
    return 611.2 * np.exp(17.67 * tc / (tc + 243.5))


def specific_humidity(rh, t, p):
    """q (kg/kg) at relative humidity rh, temperature t (K) and pressure p (Pa)."""
    e = rh * saturation_vapour_pressure(t)
    return EPS * e / (p - (1.0 - EPS) * e)


def height_of_pressure(p_surface, t_mean, p_level):
    """Hypsometric height (m) of the pressure level p_level above the sea-level/surface pressure
    p_surface, for a layer mean temperature t_mean (negative when p_level > p_surface)."""
    return RD * t_mean / G * np.log(p_surface / p_level)


# -- Holland vortex --------------------------------------------------------------------------------

def holland_deficit_fraction(r_km, rmax_km, b):
    """Share of the central pressure deficit remaining at radius r: 1 - exp(-(Rmax/r)^B) (1 at the
    centre, falling as (Rmax/r)^B far out)."""
    r = np.maximum(np.asarray(r_km, np.float64), 1e-6)
    return 1.0 - np.exp(-(rmax_km / r) ** b)


def holland_wind(r_km, dp_pa, rmax_km, b, f):
    """Gradient wind speed (m/s, >= 0) of the Holland profile at radius r (km), |f| in s^-1."""
    r_m = np.maximum(np.asarray(r_km, np.float64), 1e-6) * 1e3
    x = (rmax_km * 1e3 / r_m) ** b
    fr2 = np.abs(f) * r_m / 2.0
    return np.sqrt(b * dp_pa / RHO_AIR * x * np.exp(-x) + fr2 ** 2) - fr2


def radius_of_max_wind(dp_pa, rmax_km, b, f):
    """Radius (km) where the Holland gradient wind peaks. Without rotation it is exactly Rmax;
    the Coriolis term moves it slightly inward, so it is found numerically (0.1 % resolution)."""
    r = rmax_km * np.linspace(0.3, 2.0, 1701)
    return float(r[np.argmax(holland_wind(r, dp_pa, rmax_km, b, f))])


def box_radius_km(rmax_km, b, fraction):
    """Radius where the pressure deficit falls to `fraction` of its central value: the vortex's
    box half-size. Solves 1 - exp(-(Rmax/r)^B) = fraction."""
    return rmax_km * (-np.log(1.0 - fraction)) ** (-1.0 / b)


# -- correlated noise ------------------------------------------------------------------------------

def smooth_noise(rng, grid, length_km, count=1):
    """`count` Gaussian random fields of unit variance with a Gaussian correlation of e-folding
    scale ~length_km (white noise filtered in Fourier space). The filter width is fixed in pixels
    (from the equatorial cell size), so features shrink in km toward the poles as on a real
    lat-lon grid. Periodic in longitude; in latitude the field is cut from a doubled domain so
    that the two poles are not correlated through the FFT's wrap-around. Returns (count, H, W)."""
    h2, w = 2 * grid.height, grid.width
    sy = length_km / grid.dy_km / np.sqrt(2.0)
    sx = length_km / grid.dx_km(0.0) / np.sqrt(2.0)
    ky = np.fft.fftfreq(h2)[:, None]
    kx = np.fft.rfftfreq(w)[None, :]
    transfer = np.exp(-2.0 * np.pi ** 2 * ((sy * ky) ** 2 + (sx * kx) ** 2))
    # variance of filtered unit white noise: the mean of |H|^2 over the full spectrum
    full = np.exp(-2.0 * np.pi ** 2 * ((sy * ky) ** 2 + (sx * np.fft.fftfreq(w)[None, :]) ** 2))
    norm = np.sqrt(np.mean(full ** 2))
    white = rng.standard_normal((count, h2, w))
    fields = np.fft.irfft2(np.fft.rfft2(white) * transfer, s=(h2, w)) / norm
    return fields[:, :grid.height, :]
