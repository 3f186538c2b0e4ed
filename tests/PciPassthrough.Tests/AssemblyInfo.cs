using System.Runtime.Versioning;

// The daemon drives Linux sysfs and VFIO; nothing here runs anywhere else.
[assembly: SupportedOSPlatform("linux")]
