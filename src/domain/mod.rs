//! Parse-don't-validate domain types. Each has no public constructor but `parse`, so a
//! value that has not been checked at the edge cannot travel inward.

pub mod email;
pub mod password;
pub mod token;

pub use email::EmailAddress;
pub use password::{NewPassword, PasswordPolicy, PasswordProblem, SubmittedPassword};
pub use token::ResetToken;
