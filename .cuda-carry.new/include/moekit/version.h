/* moekit version string. */
#ifndef MOEKIT_VERSION_H
#define MOEKIT_VERSION_H
#define MK_VERSION "0.1.0"
#endif
