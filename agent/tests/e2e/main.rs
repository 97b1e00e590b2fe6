//! End-to-end tests of `slipway-agent`: the real binary, real files, real
//! processes (the example app), the direct supervisor, and the AWS emulator
//! for the S3, Parameter Store and EC2 paths.

mod aws;
mod boot;
mod crash;
mod deploy;
mod links;
mod support;
