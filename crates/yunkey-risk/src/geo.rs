//! Positions on the Earth and the great-circle distance between them (haversine).

use serde::{Deserialize, Serialize};

/// Mean Earth radius, kilometres.
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A checked latitude and longitude, in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeoPoint {
    /// -90..=90.
    pub latitude: f64,
    /// -180..=180.
    pub longitude: f64,
}

impl GeoPoint {
    /// A point, if both coordinates are finite and in range.
    pub fn new(latitude: f64, longitude: f64) -> Result<Self, String> {
        if !(latitude.is_finite() && (-90.0..=90.0).contains(&latitude)) {
            return Err(format!(
                "latitude {latitude} is not between -90 and 90 degrees"
            ));
        }
        if !(longitude.is_finite() && (-180.0..=180.0).contains(&longitude)) {
            return Err(format!(
                "longitude {longitude} is not between -180 and 180 degrees"
            ));
        }
        Ok(Self {
            latitude,
            longitude,
        })
    }

    /// Great-circle distance to `other`, kilometres.
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        let (p1, p2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dp = p2 - p1;
        let dl = (other.longitude - self.longitude).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_distances() {
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap();
        let london = GeoPoint::new(51.5074, -0.1278).unwrap();
        let sydney = GeoPoint::new(-33.8688, 151.2093).unwrap();
        let d = paris.distance_km(&london);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        let d = paris.distance_km(&sydney);
        assert!((d - 16_960.0).abs() < 30.0, "{d}");
        assert_eq!(paris.distance_km(&paris), 0.0);
        // Antipodes: half the circumference, no NaN.
        let a = GeoPoint::new(0.0, 0.0).unwrap();
        let b = GeoPoint::new(0.0, 180.0).unwrap();
        assert!((a.distance_km(&b) - 20_015.1).abs() < 1.0);
    }

    #[test]
    fn out_of_range_is_refused() {
        assert!(GeoPoint::new(91.0, 0.0).is_err());
        assert!(GeoPoint::new(0.0, -180.5).is_err());
        assert!(GeoPoint::new(f64::NAN, 0.0).is_err());
        assert!(GeoPoint::new(-90.0, 180.0).is_ok());
    }
}
